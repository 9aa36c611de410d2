"""The paper's MNIST table (as quoted in docs/nest.md) and the side-by-side view.

The paper's rows (its claims, kept only to print beside what a run measured) live with
each architecture in ``nestref.nest.architectures``; ``PAPER_ROWS`` lists them.
"""
from ..data.datasets import GIVEN_DATA
from ..nest.architectures import PAPER_ROWS


def _k(n):
    return f"{n / 1000:.1f}K" if n < 1_000_000 else f"{n / 1e6:.2f}M"


def comparison_table(runs, study_means=()):
    """A Markdown table: the paper's rows for the runs' architectures, then each run, then the
    study's mean over seeds of the same recipe.

    runs: list of (label, report dict as written to report.json). study_means: list of
    (label, a ``nestref.tools.study.summary_rows`` entry, the report of a run of that arch).
    """
    archs = sorted({r["arch"] for _, r in runs})
    lines = [
        "| model | source | method | test error | params | FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for arch in archs:
        # the paper measured on MNIST: its rows go beside runs on MNIST only
        on_mnist = any(_data_name(r) == "mnist" for _, r in runs if r["arch"] == arch)
        dense = next(
            (row for row in PAPER_ROWS if row[0] == arch and row[1] == "dense baseline"), None
        )
        for model, method, err, params, flops in PAPER_ROWS if dense and on_mnist else ():
            if model == arch:
                lines.append(f"| {model} | paper | {method} | {100 * err:.2f}% | "
                             f"{_k(params)} ({dense[3] / params:.1f}x) "
                             f"| {_k(flops)} ({dense[4] / flops:.1f}x) |")
        for label, r in runs:
            if r["arch"] == arch:
                aug = ", augmented" if r.get("augment") else ""
                data = "" if _data_name(r) == "mnist" else f", on {_data_name(r)}"
                lines.append(f"| {arch} | nestref | {label}{aug}{data} | "
                             f"{100 * r['test_error']:.2f}% | {_k(r['params'])} "
                             f"({r['params_compression']:.1f}x) | "
                             f"{_k(r['flops'])} ({r['flops_compression']:.1f}x) |")
        for label, mean, r in study_means:
            if r["arch"] == arch:
                dense = r["dense_baseline"]
                lines.append(f"| {arch} | nestref study | {label} | {100 * mean['test_error']:.2f}%"
                             f" +- {100 * mean['test_error_std']:.2f} | {_k(mean['params'])} "
                             f"({dense['params'] / mean['params']:.1f}x) | {_k(mean['flops'])} "
                             f"({dense['flops'] / mean['flops']:.1f}x) |")
    return "\n".join(lines)


def _data_name(report):
    """The data set a report was measured on (reports from before data sets were named: MNIST)."""
    data = report.get("data", {})
    return data.get("name", "mnist") if isinstance(data, dict) else GIVEN_DATA
