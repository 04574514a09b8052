from _log import redirect, say
from opdpipe import evaluate

redirect(snakemake.log[0])
e, inp, out = snakemake.params.eval, snakemake.input, snakemake.output
finals = out.final if hasattr(out, "final") else list(out)  # evaluate_reference: one unnamed output
bests = out.best if hasattr(out, "best") else [None] * len(finals)  # evaluate_variant: best/ of each seed too
for i, (ckpt, dest, seed, label) in enumerate(zip(inp.checkpoints, finals, snakemake.params.seeds,
                                                  snakemake.params.labels, strict=True)):
    kw = dict(task=snakemake.wildcards.task, data_file=inp.test, k=e["k"], max_gen_toks=snakemake.params.max_gen_toks,
              batch_size=e["batch_size"], limit=e["limit"], seed=seed, threads=snakemake.threads,
              chat=e.get("chat"), dtype=e.get("dtype", "float32"), device=e.get("device", "cpu"))
    runs = [evaluate.run(ckpt, out_json=dest, label=label, **kw)]
    if bests[i] is not None:
        runs.append(evaluate.run_best(inp.best[i], inp.summaries[i], dest, bests[i], label=label, **kw))
    for r in runs:
        say(f"{r['label']}: greedy {r['greedy_acc']:.4f} +- {r['greedy_acc_stderr']:.4f}; avg@{r['k']} "
            f"{r['avg_at_k']:.4f} +- {r['avg_at_k_stderr']:.4f} over {r['n_samples']} problems"
            + (f" ({r['note']})" if "note" in r else ""))
