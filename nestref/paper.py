"""The paper's MNIST table (as quoted in docs/nest.md) and the side-by-side view.

These are the paper's claims, kept here only to print beside what a run measured.
"""

PAPER_ROWS = [
    # model, method, test error, params, FLOPs
    ("lenet-300-100", "dense baseline", 0.0160, 266_610, 532_400),
    ("lenet-300-100", "pruning only (Han et al. 2015)", 0.0159, 22_000, 43_000),
    ("lenet-300-100", "NeST, compact", 0.0158, 3_800, 6_700),
    ("lenet-300-100", "NeST, accurate", 0.0129, 7_800, 14_900),
    ("lenet5", "dense baseline", 0.0080, 431_080, 4_586_000),
    ("lenet5", "pruning only (Han et al. 2015)", 0.0077, 35_000, 734_000),
    ("lenet5", "NeST", 0.0077, 5_800, 105_000),
]


def _k(n):
    return f"{n / 1000:.1f}K" if n < 1_000_000 else f"{n / 1e6:.2f}M"


def comparison_table(runs):
    """A Markdown table: the paper's rows for the runs' architectures, then each run.

    runs: list of (label, report dict as written to report.json).
    """
    archs = sorted({r["arch"] for _, r in runs})
    lines = ["| model | source | method | test error | params | FLOPs |", "|---|---|---|---|---|---|"]
    for arch in archs:
        dense = next(row for row in PAPER_ROWS if row[0] == arch and row[1] == "dense baseline")
        for model, method, err, params, flops in PAPER_ROWS:
            if model == arch:
                lines.append(f"| {model} | paper | {method} | {100 * err:.2f}% | {_k(params)} ({dense[3] / params:.1f}x) "
                             f"| {_k(flops)} ({dense[4] / flops:.1f}x) |")
        for label, r in runs:
            if r["arch"] == arch:
                aug = ", augmented" if r.get("augment") else ""
                lines.append(f"| {arch} | nestref | {label}{aug} | {100 * r['test_error']:.2f}% | {_k(r['params'])} "
                             f"({r['params_compression']:.1f}x) | {_k(r['flops'])} ({r['flops_compression']:.1f}x) |")
    return "\n".join(lines)
