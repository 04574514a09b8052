"""Print the exact (enumerated) gradient error of OPD and OPD+ for every divergence and gamma.

    python benchmarks/enumeration_bias.py      (same as: opdpipe bias)
"""
from opdpipe.enumeration import report

if __name__ == "__main__":
    report()
