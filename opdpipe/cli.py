"""Command line: the same stages the workflow runs, one at a time.

    opdpipe validate configs/default.yaml
    opdpipe train configs/default.yaml --task math --variant forward_kl-opd_plus --seed 0
    opdpipe evaluate results/default/math/forward_kl-opd_plus/seed0/final --task math \
        --test results/default/data/math/test.jsonl --out /tmp/eval.json
    opdpipe benchmark <checkpoint> --name aime24 --path aime_2024.parquet --out /tmp/aime24/eval.json --k 32
    opdpipe bias                       # exact gradient error of OPD / OPD+ by enumeration

    opdpipe where configs/default.yaml run --task math --variant jsd-opd_plus --seed 1   # a validated path

`train` expects the world (data, teacher, SFT-init) of the study under results/<study>/, as the
workflow makes it; it writes to results/<study>/<task>/<variant>/seed<k>/ unless --out is given.
Every path comes from opdpipe.layout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opdpipe.layout import Layout


def _train(args) -> None:
    from opdpipe import self_distill, trainer
    from opdpipe.backends.study import backend_block
    from opdpipe.config import load, opd_hparams, variants

    cfg = load(args.config)
    vs, tasks = variants(cfg), self_distill.study_tasks(cfg)
    if args.variant not in vs:
        sys.exit(f"--variant {args.variant!r} is not in {args.config}; known: {', '.join(vs)}")
    if args.task not in tasks:
        sys.exit(f"--task {args.task!r} is not in {args.config}; known: {', '.join(tasks)}")
    lay = Layout.for_study(cfg["study"])
    out = args.out or lay.run_dir(args.task, args.variant, args.seed)
    spec = trainer.RunSpec(self_distill.source_task(cfg, args.task), vs[args.variant]["divergence"],
                           vs[args.variant]["design"], args.seed, lay.checkpoint(args.task, "sft_init"),
                           lay.checkpoint(args.task, self_distill.teacher_row(args.task)),  # OPSD: the SFT-init
                           lay.data_dir(args.task), str(out), opd_hparams(cfg, args.task, args.variant),
                           backend_block(self_distill.models_of(cfg, args.task)))
    summary = trainer.run(spec)
    print(json.dumps(summary["final"], indent=1))


def _load(path: str) -> dict:
    from opdpipe.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as err:
        sys.exit(str(err))


def _where(args) -> None:
    """Print one validated path or value of a study (for the Makefile: never a raw config value)."""
    from opdpipe.layout import default_tracking_uri

    cfg = _load(args.config)
    lay = Layout.for_study(cfg["study"])
    if args.what == "study":
        print(cfg["study"])
    elif args.what == "tracking-uri":
        print(cfg["tracking"]["uri"] or default_tracking_uri(lay))
    else:  # run: the summary.json of one task / variant / seed, which `make variant` forces
        from opdpipe.config import variants

        from opdpipe.self_distill import study_tasks

        if args.task not in study_tasks(cfg):
            sys.exit(f"TASK={args.task!r} is not a task of {args.config}; allowed: {', '.join(study_tasks(cfg))}")
        if args.variant not in variants(cfg):
            sys.exit(f"VARIANT={args.variant!r} is not a variant of {args.config}; allowed: {', '.join(variants(cfg))}")
        if not args.seed.isdigit() or int(args.seed) not in cfg["seeds"]:
            sys.exit(f"SEED={args.seed!r} is not a seed of {args.config}; allowed: {', '.join(map(str, cfg['seeds']))}")
        print(lay.run_file(args.task, args.variant, int(args.seed), "summary.json"))


def _evaluate(args) -> None:
    from opdpipe import evaluate

    r = evaluate.run(args.checkpoint, args.task, args.test, args.out, k=args.k, seed=args.seed)
    print({k: r[k] for k in ("greedy_acc", "greedy_acc_stderr", "avg_at_k", "avg_at_k_stderr", "n_samples")})


def _benchmark(args) -> None:
    from opdpipe.tasks import benchmarks

    block = {"path": args.path} if args.path else {"hf_id": args.hf_id, "revision": args.revision}
    try:
        benchmarks.check_benchmarks("benchmark", {args.name: block})
    except ValueError as err:
        sys.exit(str(err))
    data = Path(args.out).parent / "data"
    benchmarks.prepare(args.name, block, data)
    r = benchmarks.evaluate(args.checkpoint, args.name, data / "test.jsonl", args.out, k=args.k,
                            max_gen_toks=args.max_gen_toks, seed=args.seed)
    print({k: r[k] for k in ("greedy_acc", "avg_at_k", "avg_at_k_stderr", "pass_at_k", "n_samples")})


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
    b = sub.add_parser("benchmark", help="lm-eval a checkpoint on a math benchmark (aime24, aime25, hmmt25)")
    b.add_argument("checkpoint")
    b.add_argument("--name", required=True)
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--path", help="local .jsonl / .json / .parquet file")
    src.add_argument("--hf-id", help="hub dataset id (with --revision)")
    b.add_argument("--revision", help="40-hex commit of --hf-id")
    b.add_argument("--out", required=True)
    b.add_argument("--k", type=int, default=32)
    b.add_argument("--max-gen-toks", type=int, default=8192)
    b.add_argument("--seed", type=int, default=0)
    sub.add_parser("bias", help="print the enumerated gradient error of OPD and OPD+")
    w = sub.add_parser("where", help="print a validated value of a study: study | tracking-uri | run")
    w.add_argument("config")
    w.add_argument("what", choices=["study", "tracking-uri", "run"])
    w.add_argument("--task", default="")
    w.add_argument("--variant", default="")
    w.add_argument("--seed", default="")
    args = p.parse_args(argv)
    if args.cmd == "validate":
        cfg = _load(args.config)
        group = f" + self-distillation on {cfg['self_distillation']['source']}" if cfg.get("self_distillation") else ""
        print(f"{args.config}: valid ({len(cfg['tasks'])} tasks{group}, {len(cfg['variants'])} variants, "
              f"{len(cfg['seeds'])} seeds)")
    elif args.cmd == "train":
        _train(args)
    elif args.cmd == "evaluate":
        _evaluate(args)
    elif args.cmd == "benchmark":
        _benchmark(args)
    elif args.cmd == "where":
        _where(args)
    elif args.cmd == "bias":
        from opdpipe.enumeration import report

        report()


if __name__ == "__main__":
    main()
