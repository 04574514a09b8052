"""LoRA adapters via peft: `student.adapter: {type: lora, rank, alpha, dropout, target_modules}`.

Target modules are checked against the model's own Linear layers (an unknown name is refused
with the valid ones listed). The checkpoint lm-eval reads is the merged model, saved with
`save_pretrained`, so anyone loads it plainly; resumable training checkpoints keep the adapter
weights (and the trainer keeps the optimizer state beside them).
"""
from __future__ import annotations

from pathlib import Path

import torch

ADAPTER_TYPES = ("none", "lora")
LORA_DEFAULTS = {"rank": 128, "alpha": 128, "dropout": 0.0, "target_modules": "all-linear"}


def linear_names(model: torch.nn.Module) -> list[str]:
    """Short names of the Linear layers a LoRA may target (the output head excluded)."""
    head = model.get_output_embeddings()
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and m is not head})


def check_adapter(spec: dict | None, where: str = "student.adapter") -> dict | None:
    """The adapter block with defaults filled in; None for no adapter. Raises ValueError on bad keys."""
    if not spec or spec.get("type", "none") == "none":
        return None
    if spec.get("type") not in ADAPTER_TYPES:
        raise ValueError(f"{where}.type = {spec.get('type')!r}; allowed: {', '.join(ADAPTER_TYPES)}")
    unknown = set(spec) - set(LORA_DEFAULTS) - {"type"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: type, {', '.join(LORA_DEFAULTS)}")
    return {**LORA_DEFAULTS, **spec}


def check_targets(model: torch.nn.Module, spec: dict, where: str = "student.adapter") -> None:
    targets = spec["target_modules"]
    if targets == "all-linear":
        return
    valid = linear_names(model)
    unknown = [t for t in ([targets] if isinstance(targets, str) else targets) if t not in valid]
    if unknown:
        raise ValueError(f"{where}.target_modules: {unknown} are not Linear layers of this model; "
                         f"allowed: all-linear, {', '.join(valid)}")


def attach_lora(model: torch.nn.Module, spec: dict, where: str = "student.adapter"):
    """Wrap `model` in a peft LoRA model (only adapter weights train)."""
    from peft import LoraConfig, get_peft_model

    check_targets(model, spec, where)
    cfg = LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                     target_modules=spec["target_modules"], task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_adapter(model: torch.nn.Module, folder: str | Path):
    """The base `model` with the adapter saved in `folder` (trainable, for resuming)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=True)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model with the adapter folded into its weights (the adapter model intact)."""
    import copy

    return copy.deepcopy(model).merge_and_unload()
