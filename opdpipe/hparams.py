"""OPD trainer hyperparameters and their defaults: the paper's recipe, in one visible block.

Kept apart from the trainer so that config validation (run by every Snakemake invocation) reads
them without importing torch models.
"""

DEFAULTS = {
    "steps": 60,                 # optimizer steps (one batch of fresh rollouts each)
    "prompts_per_step": 16,      # prompts sampled per step
    "group_size": 4,             # rollouts per prompt (Tinker / paper: 4)
    "num_substeps": 1,           # minibatches per step over the same rollouts
    "lr": 1.0e-3,
    "lr_schedule": "constant",   # constant | cosine
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "temperature": 1.0,          # must be 1.0: rollouts are samples from the student
    "top_k": None,               # must be None
    "top_p": None,               # must be None
    "gamma": 0.0,                # discount of future -f(u) in the advantage (paper: 0)
    "log_u_clip": 20.0,          # |log_u| bound before exponentiation
    "loss_agg": "token_mean",
    "clip_ratio": None,          # PPO-style ratio clipping (paper: none)
    "normalize_advantages": False,  # z-score advantages per batch (paper: no)
    "max_new_tokens": 48,
    "eval_every": 10,            # validation (greedy and avg@val_k) every N steps (and at 0 and the end)
    "eval_size": 64,             # fixed validation subset
    "val_k": 4,                  # samples per validation prompt for avg@k at T = 1: picks the best checkpoint
    "bias_every": 10,            # bias meter every M steps (0 = never)
    "bias_rollouts": 16,         # rollouts of the batch the bias meter uses
    "bias_max_vocab": 4096,      # skip the bias meter above this vocabulary size
    "checkpoint_every": 20,      # resumable checkpoint every K steps (0 = only the final one)
    "threads": 1,                # torch threads (per rank)
    "world_size": 1,             # data-parallel ranks (torchrun); each samples prompts_per_step / world_size
    "logprob_chunk": 0,          # >0: log-probs `chunk` response positions at a time (no [B, T, V] tensor)
    "micro_batch_size": 0,       # >0: gradient accumulation over micro-batches of this many rollouts
    "rollout_batch_size": 0,     # >0: sample this many rollouts at a time (pretrained models)
}
