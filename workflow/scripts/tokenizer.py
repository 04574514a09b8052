from pathlib import Path

from _log import redirect, say
from opdpipe.tokenizer import build_char_tokenizer, save_tokenizer

redirect(snakemake.log[0])
save_tokenizer(build_char_tokenizer(), Path(snakemake.output[0]).parent)
say("character tokenizer saved")
