"""How models run, for pretrained checkpoints and at paper scale.

The embedded default world (character tokenizer, Llama models built here, float32 on the CPU)
never goes through this package's optional paths; each module owns one concern:

    logprobs.py   sampled-token log-probs computed per slice of the response (no [B, T, V] tensor)
    device.py     device (auto | cpu | cuda) and dtype (float32 | bfloat16) resolution
    loading.py    model sources: a local folder or a hub id at a pinned commit; loading in a dtype
    vocab.py      the tokenizer of a checkpoint; teacher / student vocabulary agreement
    chat.py       the one function that renders a prompt (chat template or plain text)
    lora.py       LoRA adapters via peft: attach, check target modules, merge for save_pretrained
    rollout.py    the rollout-sampling interface the trainer calls: rollout.backend hf | vllm
    vllm_engine.py  the vLLM engine (optional extra, imported when it starts), merged-LoRA weight sync
    vllm_env.py   where the extra's interpreter is (its own environment, .venv-vllm), without importing it
    minipair.py   a small hub-format Qwen3 teacher / student pair with a BPE tokenizer, built locally
"""
