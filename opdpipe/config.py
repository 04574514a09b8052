"""Study configs: JSON-schema validation (with defaults), registry checks, variant resolution.

Everything that can be wrong with a config fails here, before any job starts, with a message
that names the key, the value and what is allowed.
"""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from opdpipe.advantages import ADVANTAGES
from opdpipe.backends.study import check_study
from opdpipe.data import check_sizes
from opdpipe.divergences import DIVERGENCES
from opdpipe.tasks import TASKS

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = "configs/default.yaml"


class ConfigError(ValueError):
    pass


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        for name, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub and name not in instance:
                instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(config: dict) -> dict:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError otherwise."""
    cfg = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigError(f"config error at {_where(e.absolute_path)}: {e.message}")
    for task, spec in cfg["tasks"].items():
        if task not in TASKS:
            raise ConfigError(f"config error at tasks.{task}: unknown task; allowed: {', '.join(TASKS.names())}")
        try:
            check_sizes(task, spec)
        except ValueError as err:
            raise ConfigError(f"config error: {err}") from None
    try:
        check_study(cfg)  # model sources, devices, adapter, chat (opdpipe.backends.study)
    except ValueError as err:
        raise ConfigError(f"config error at {err}") from None
    if "model" in cfg["teacher"] and "train" not in cfg["teacher"]:
        raise ConfigError("config error at teacher: a model built here needs a 'train' block")
    for task, spec in cfg["tasks"].items():
        if "teacher_train" in spec and "train" not in cfg["teacher"]:
            raise ConfigError(f"config error at tasks.{task}.teacher_train: the teacher is not trained here "
                              "(it has no 'train' block); remove the override")
    seen = set()
    for i, v in enumerate(cfg["variants"]):
        if v["divergence"] not in DIVERGENCES:
            raise ConfigError(f"config error at variants.{i}.divergence: unknown {v['divergence']!r}; "
                              f"allowed: {', '.join(DIVERGENCES.names())}")
        if v["design"] not in ADVANTAGES:
            raise ConfigError(f"config error at variants.{i}.design: unknown {v['design']!r}; "
                              f"allowed: {', '.join(ADVANTAGES.names())}")
        vid = variant_id(v)
        if vid in seen or vid in ("teacher", "sft_init"):
            raise ConfigError(f"config error at variants.{i}: variant id {vid!r} is used twice or reserved; "
                              "give it a distinct 'name'")
        seen.add(vid)
    return _sorted(cfg)


def _sorted(obj):
    """Key-sorted copy: how a file orders its keys never changes a job's params (nor its re-runs)."""
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(x) for x in obj]
    return obj


def load_yaml(path: str | Path) -> dict:
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None


def load(path: str | Path) -> dict:
    return validate(load_yaml(path))


def variant_id(v: dict) -> str:
    return v.get("name") or f"{v['divergence']}-{v['design']}"


def variants(cfg: dict) -> dict[str, dict]:
    return {variant_id(v): v for v in cfg["variants"]}


def teacher_config(cfg: dict, task: str) -> dict:
    """The teacher block for one task: teacher.train updated with the task's teacher_train overrides."""
    teacher = copy.deepcopy(cfg["teacher"])
    if cfg["tasks"][task].get("teacher_train"):
        teacher["train"] = {**teacher["train"], **cfg["tasks"][task]["teacher_train"]}
    return teacher


def opd_hparams(cfg: dict, task: str, vid: str) -> dict:
    """Trainer hyperparameters of one variant: study opd block, then the task's, then the variant's."""
    v = variants(cfg)[vid]
    hp = {"threads": cfg["threads"], "max_new_tokens": cfg["tasks"][task]["max_new_tokens"]}
    return {**hp, **cfg.get("opd", {}), **cfg["tasks"][task].get("opd", {}), **v.get("opd", {})}
