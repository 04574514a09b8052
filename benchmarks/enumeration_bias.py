"""Print the exact (enumerated) gradient error of OPD and OPD+ for every divergence and gamma.

    python benchmarks/enumeration_bias.py

Uses the same tabular policy as tests/test_enumeration.py; numbers are deterministic.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_enumeration import ALL, exact_grad, expected_surrogate_grad  # noqa: E402


def main():
    print(f"{'divergence':<16} {'gamma':>5} {'OPD+ max|err|':>14} {'OPD rel.err':>12}")
    worst_plus, rows = 0.0, []
    for div in ALL:
        for gamma in (0.0, 1.0):
            g_true = exact_grad(div, gamma)
            err_plus = (expected_surrogate_grad("opd_plus", div, gamma) - g_true).abs().max().item()
            rel_opd = ((expected_surrogate_grad("opd", div, gamma) - g_true).norm() / g_true.norm()).item()
            worst_plus = max(worst_plus, err_plus)
            rows.append((div, gamma, rel_opd))
            print(f"{div:<16} {gamma:>5.0f} {err_plus:>14.2e} {rel_opd:>12.4f}")
    biased = [r for r in rows if r[0] in ("forward_kl", "jsd")]
    print(f"largest OPD+ error: {worst_plus:.2e}")
    print(f"smallest stop-grad relative bias (forward_kl, jsd): {min(r[2] for r in biased):.4f}")


if __name__ == "__main__":
    main()
