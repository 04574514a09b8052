from _log import redirect, say
from opdpipe import evaluate

redirect(snakemake.log[0])
e = snakemake.params.eval
for ckpt, out, seed, label in zip(snakemake.input.checkpoints, snakemake.output, snakemake.params.seeds,
                                  snakemake.params.labels, strict=True):
    r = evaluate.run(ckpt, snakemake.wildcards.task, snakemake.input.test, out, k=e["k"],
                     max_gen_toks=snakemake.params.max_gen_toks, batch_size=e["batch_size"], limit=e["limit"],
                     seed=seed, threads=snakemake.threads, label=label, chat=e.get("chat"),
                     dtype=e.get("dtype", "float32"), device=e.get("device", "cpu"))
    say(f"{label}: greedy {r['greedy_acc']:.4f} +- {r['greedy_acc_stderr']:.4f}; avg@{r['k']} {r['avg_at_k']:.4f} "
        f"+- {r['avg_at_k_stderr']:.4f} over {r['n_samples']} problems")
