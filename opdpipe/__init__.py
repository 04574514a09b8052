"""opdpipe: a reproducible experiment pipeline for on-policy distillation (OPD and OPD+)."""
__version__ = "0.1.0"
