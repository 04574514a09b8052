from pathlib import Path

from _log import redirect, say
from opdpipe.tokenizer import build_char_tokenizer, save_tokenizer

redirect(snakemake.log[0])
src, out = snakemake.params.source, Path(snakemake.output[0]).parent
if src["kind"] == "char":
    save_tokenizer(build_char_tokenizer(), out)
    say("character tokenizer saved")
else:  # the checkpoints' own tokenizer; teacher and student must agree on every id
    from opdpipe.backends.loading import resolve_source
    from opdpipe.backends.vocab import check_vocab_agreement, load_checkpoint_tokenizer

    toks = {r: load_checkpoint_tokenizer(resolve_source(src[r], r), src[r].get("trust_remote_code", False))
            for r in ("teacher", "student")}
    check_vocab_agreement(toks["teacher"], toks["student"])
    save_tokenizer(toks["student"], out)
    say(f"checkpoint tokenizer saved ({len(toks['student'])} tokens, teacher and student agree)")
