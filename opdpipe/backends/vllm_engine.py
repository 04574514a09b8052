"""Rollouts sampled by a vLLM engine inside the train job (`rollout.backend: vllm`).

The engine is the one TRL, verl and OpenRLHF sample with: it holds its own copy of the student's
weights, so `sync(model)` pushes the trainer's weights into it after every optimizer step (a LoRA
student's merged weights: W + scale * B @ A per adapted layer). It runs in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the single-process "uni" executor), so weights travel as the
trainer's tensors through `collective_rpc("reload_weights", weights_iterator=...)`, without a copy
to disk; the prefix cache is reset after each sync (its KV blocks belong to the old weights).

Sampling matches `opdpipe.generation.sample`: temperature 1, no top-k / top-p / min-p, no
penalties, one request per rollout with its own seed drawn from the trainer's generator, stop at
the tokenizer's EOS only (included in the response, as there), and the sampled tokens' log-probs
of the raw model distribution. vllm is imported only when an engine starts.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from opdpipe.generation import Rollout

DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def policy_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of the plain transformers model the student is; a peft LoRA student's
    adapted layers merged (W + delta) without changing the student itself."""
    if not hasattr(model, "peft_config"):
        return [(n, t.detach()) for n, t in model.state_dict().items()]
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    out, lora_layers = [], {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            lora_layers[name] = module
    for name, t in base.state_dict().items():
        if ".lora_" in name or ".base_layer." in name:
            continue
        out.append((name, t.detach()))
    for name, module in lora_layers.items():
        w = module.base_layer.weight.detach()
        for adapter in module.active_adapters:
            if adapter in module.lora_A and adapter not in module.merged_adapters:
                w = w + module.get_delta_weight(adapter).detach().to(w.dtype)
        out.append((f"{name}.weight", w))
        if getattr(module.base_layer, "bias", None) is not None:
            out.append((f"{name}.bias", module.base_layer.bias.detach()))
    return out


class VLLMEngine:
    """A vLLM engine over the student's checkpoint folder, started on the first `sample` call.
    `batch_size` (the hf sampler's) is not used: vLLM schedules its own batches."""

    def __init__(self, batch_size: int = 0, model_dir: str | Path | None = None, dtype: torch.dtype = torch.float32,
                 seed: int = 0, gpu_memory_utilization: float = 0.3, cpu_kv_cache_gb: int = 1):
        if model_dir is None:
            raise ValueError("rollout.backend = 'vllm' needs the student's checkpoint folder to start its engine")
        self.model_dir, self.dtype, self.seed = str(model_dir), dtype, seed
        self.gpu_memory_utilization, self.cpu_kv_cache_gb = gpu_memory_utilization, cpu_kv_cache_gb
        self.llm = None
        self.synced = False

    # ------------------------------------------------------------ engine life
    def start(self) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weights sync as tensors
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(self.cpu_kv_cache_gb)))  # whole GiB
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # share the job's cores, bind none
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        try:
            from vllm import LLM
        except ImportError as err:
            from opdpipe.backends.vllm_env import INSTALL_HINT

            raise ImportError(f"rollout.backend = 'vllm': vllm cannot be imported in {sys.executable} "
                              f"({err}); {INSTALL_HINT}") from None
        set_threads, threads = torch.set_num_threads, torch.get_num_threads()
        rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())  # LLM(seed=) seeds them all
        self.llm = LLM(model=self.model_dir, tokenizer=self.model_dir, dtype=DTYPES[self.dtype], seed=self.seed,
                       distributed_executor_backend="uni", enforce_eager=True, generation_config="vllm",
                       logprobs_mode="raw_logprobs", gpu_memory_utilization=self.gpu_memory_utilization)
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op (it binds threads; here nobind):
        # the job keeps its `threads:`, and its own calls work again
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        torch.set_rng_state(rng[0]), random.setstate(rng[1]), np.random.set_state(rng[2])  # the trainer's, as they were

    def close(self) -> None:
        self.llm = None

    # ------------------------------------------------------------ the interface
    def sync(self, model) -> None:
        """Push the student's current weights (merged LoRA weights) into the engine."""
        if self.llm is None:
            self.start()
        weights = policy_weights(model)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()
        self.synced = True

    def sample(self, model, prompt_ids, max_new_tokens, eos_id, pad_id, generator) -> Rollout:
        if not self.synced:  # a resumed or LoRA student differs from the folder the engine loaded
            self.sync(model)
        from vllm import SamplingParams

        seeds = torch.randint(2**31 - 1, (len(prompt_ids),), generator=generator, device=generator.device).tolist()
        params = [SamplingParams(n=1, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, max_tokens=max_new_tokens,
                                 logprobs=0, seed=s, ignore_eos=True, stop_token_ids=[eos_id], detokenize=False)
                  for s in seeds]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False)
        return to_rollout(prompt_ids, [o.outputs[0] for o in outs], eos_id, pad_id, max_new_tokens)


def to_rollout(prompt_ids, completions, eos_id: int, pad_id: int, max_new_tokens: int) -> Rollout:
    """vLLM completions -> a Rollout laid out as opdpipe.generation.sample lays it out."""
    rows, lps = [], []
    for c in completions:
        ids = list(c.token_ids)
        if eos_id in ids:
            ids = ids[:ids.index(eos_id) + 1]
        rows.append(ids)
        lps.append([c.logprobs[i][t].logprob for i, t in enumerate(ids)])
    T = max(1, max(len(r) for r in rows))
    B = len(rows)
    response = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    logprobs = torch.zeros(B, T, dtype=torch.float32)
    for b, (ids, lp) in enumerate(zip(rows, lps)):
        response[b, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[b, :len(ids)] = 1
        logprobs[b, :len(ids)] = torch.tensor(lp, dtype=torch.float32)
    truncated = torch.tensor([not (r and r[-1] == eos_id) for r in rows])
    return Rollout(list(prompt_ids), response, mask, logprobs, truncated)
