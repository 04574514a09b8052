"""Command line: the same stages the workflow runs, one at a time.

    opdpipe validate configs/default.yaml
    opdpipe train configs/default.yaml --task math --variant forward_kl-opd_plus --seed 0
    opdpipe evaluate results/default/math/forward_kl-opd_plus/seed0/final --task math \
        --test results/default/data/math/test.jsonl --out /tmp/eval.json
    opdpipe bias                       # exact gradient error of OPD / OPD+ by enumeration

`train` expects the world (data, teacher, SFT-init) of the study under results/<study>/, as the
workflow makes it; it writes to results/<study>/<task>/<variant>/seed<k>/ unless --out is given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _train(args) -> None:
    from opdpipe import trainer
    from opdpipe.backends.study import backend_block
    from opdpipe.config import load, opd_hparams, variants

    cfg = load(args.config)
    vs = variants(cfg)
    if args.variant not in vs:
        sys.exit(f"--variant {args.variant!r} is not in {args.config}; known: {', '.join(vs)}")
    if args.task not in cfg["tasks"]:
        sys.exit(f"--task {args.task!r} is not in {args.config}; known: {', '.join(cfg['tasks'])}")
    res = Path("results") / cfg["study"]
    out = args.out or res / args.task / args.variant / f"seed{args.seed}"
    spec = trainer.RunSpec(args.task, vs[args.variant]["divergence"], vs[args.variant]["design"], args.seed,
                           str(res / args.task / "sft_init" / "checkpoint"), str(res / args.task / "teacher" / "checkpoint"),
                           str(res / "data" / args.task), str(out), opd_hparams(cfg, args.task, args.variant),
                           backend_block(cfg))
    summary = trainer.run(spec)
    print(json.dumps(summary["final"], indent=1))


def _evaluate(args) -> None:
    from opdpipe import evaluate

    r = evaluate.run(args.checkpoint, args.task, args.test, args.out, k=args.k, seed=args.seed)
    print({k: r[k] for k in ("greedy_acc", "greedy_acc_stderr", "avg_at_k", "avg_at_k_stderr", "n_samples")})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="opdpipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="validate a study config")
    v.add_argument("config")
    t = sub.add_parser("train", help="train one variant")
    t.add_argument("config")
    t.add_argument("--task", required=True)
    t.add_argument("--variant", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path)
    e = sub.add_parser("evaluate", help="lm-eval a checkpoint on a task's test file")
    e.add_argument("checkpoint")
    e.add_argument("--task", required=True)
    e.add_argument("--test", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--k", type=int, default=8)
    e.add_argument("--seed", type=int, default=0)
    sub.add_parser("bias", help="print the enumerated gradient error of OPD and OPD+")
    args = p.parse_args(argv)
    if args.cmd == "validate":
        from opdpipe.config import ConfigError, load

        try:
            cfg = load(args.config)
        except ConfigError as err:
            sys.exit(str(err))
        print(f"{args.config}: valid ({len(cfg['tasks'])} tasks, {len(cfg['variants'])} variants, "
              f"{len(cfg['seeds'])} seeds)")
    elif args.cmd == "train":
        _train(args)
    elif args.cmd == "evaluate":
        _evaluate(args)
    elif args.cmd == "bias":
        from opdpipe.enumeration import report

        report()


if __name__ == "__main__":
    main()
