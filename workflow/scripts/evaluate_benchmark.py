from _log import redirect, say
from opdpipe.tasks import benchmarks

redirect(snakemake.log[0])
e, bench = snakemake.params.eval, snakemake.wildcards.bench
for ckpt, out, seed, label in zip(snakemake.input.checkpoints, snakemake.output, snakemake.params.seeds,
                                  snakemake.params.labels, strict=True):
    r = benchmarks.evaluate(ckpt, bench, snakemake.input.test, out, k=e["k"],
                            max_gen_toks=snakemake.params.max_gen_toks, batch_size=e["batch_size"],
                            limit=e["limit"], seed=seed, threads=snakemake.threads, label=label)
    say(f"{label} {bench}: greedy {r['greedy_acc']:.4f}; avg@{r['k']} {r['avg_at_k']:.4f} "
        f"+- {r['avg_at_k_stderr']:.4f} over {r['n_samples']} problems")
