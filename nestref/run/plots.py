"""Figures of a synthesis run, from plain data (history records, mask arrays).

Ground floor: nothing here knows about networks, only about lists of dicts and
arrays, so notebooks and the command line draw the same pictures.
"""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..data.storage import atomic_write_bytes

PHASE_COLOURS = {
    "seed": "#999999",
    "dense": "#999999",
    "grow": "#2a9d8f",
    "settle": "#8ab17d",
    "prune": "#e76f51",
    "finetune": "#264653",
}


def _steps(history):
    return np.arange(len(history))


def _shade_phases(ax, history):
    for i, rec in enumerate(history):
        ax.axvspan(
            i - 0.5, i + 0.5, color=PHASE_COLOURS.get(rec["phase"], "white"), alpha=0.12, lw=0
        )


def grow_prune_curve(history, ax=None):
    """Params and FLOPs per round on a log scale: the rise of growth and the fall of pruning."""
    ax = ax or plt.figure(figsize=(7, 4)).gca()
    x = _steps(history)
    _shade_phases(ax, history)
    ax.semilogy(x, [r["params"] for r in history], "o-", label="params")
    ax.semilogy(x, [r["flops"] for r in history], "s-", label="FLOPs")
    ax.set_xlabel("round (grey: seed, green: growth, red: pruning, dark: fine-tune)")
    ax.set_ylabel("count")
    ax.legend()
    ax.set_title("grow then prune")
    return ax


def validation_error_curve(history, ax=None, chosen_round=None):
    """Validation error (%) per round; ``chosen_round`` (a pruning round's number, as in a
    report's ``chosen``) is marked with a dotted line."""
    ax = ax or plt.figure(figsize=(7, 4)).gca()
    x = _steps(history)
    _shade_phases(ax, history)
    ax.plot(x, [100 * r["val_error"] for r in history], "o-", color="k")
    if chosen_round is not None:
        index = next(i for i, r in enumerate(history)
                     if r["phase"] == "prune" and r["round"] == chosen_round)
        ax.axvline(index, color="red", ls=":", label=f"chosen: prune round {chosen_round}")
        ax.legend()
    ax.set_xlabel("round")
    ax.set_ylabel("validation error (%)")
    ax.set_title("validation error per round")
    return ax


def widths_and_densities(history, fig=None):
    """Per-layer width and density per round, two panels."""
    fig = fig or plt.figure(figsize=(10, 4))
    ax_w, ax_d = fig.subplots(1, 2)
    x = _steps(history)
    n_layers = len(history[0]["widths"])
    for layer in range(n_layers):
        ax_w.plot(x, [r["widths"][layer] for r in history], "o-", label=f"layer {layer + 1}")
        ax_d.semilogy(x, [r["densities"][layer] for r in history], "o-", label=f"layer {layer + 1}")
    for ax in (ax_w, ax_d):
        _shade_phases(ax, history)
        ax.set_xlabel("round")
        ax.legend(fontsize=8)
    ax_w.set_ylabel("width (units / maps)")
    ax_d.set_ylabel("density (active / all)")
    fig.suptitle("per-layer width and density")
    fig.tight_layout()
    return fig


def first_layer_masks(mask, image_shape=(28, 28), n_units=16, fig=None):
    """Which pixels each first-layer unit still sees, and how many units see each pixel.

    mask: (units, pixels) 0/1 for a dense first layer, or (maps, C, k, k) for a conv one.
    image_shape: (H, W), or (C, H, W), when a pixel is seen through any of its channels.
    """
    mask = np.asarray(mask)
    if mask.ndim == 2 and len(image_shape) == 3:  # a unit sees a pixel through any channel
        mask = (mask.reshape(len(mask), image_shape[0], -1) != 0).any(axis=1).astype(mask.dtype)
        image_shape = tuple(image_shape[1:])
    if mask.ndim == 4:  # conv kernels: show the kernels' masks themselves
        mask = mask[:, 0]
        image_shape = mask.shape[1:]
        mask = mask.reshape(len(mask), -1)
    n = min(n_units, len(mask))
    order = np.argsort(-mask.sum(axis=1), kind="stable")[:n]  # the busiest units first
    cols = min(8, n + 1)
    rows = int(np.ceil((n + 1) / cols))
    fig = fig or plt.figure(figsize=(1.4 * cols, 1.5 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    axes[0].imshow(mask.sum(axis=0).reshape(image_shape), cmap="magma")
    axes[0].set_title("units per pixel", fontsize=7)
    for ax, unit in zip(axes[1:], order, strict=False):
        ax.imshow(mask[unit].reshape(image_shape), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"unit {unit}: {int(mask[unit].sum())}", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n + 1:]:
        ax.set_visible(False)
    fig.suptitle("first-layer masks")
    return fig


def save_run_figures(history, first_mask, out_dir, image_shape=(28, 28)):
    """Write the four figures of a run into out_dir as PNG; returns their paths.

    image_shape: of one input image, (H, W) or (C, H, W), for the first-layer masks."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("grow_prune_curve", lambda: grow_prune_curve(history).figure),
                       ("validation_error", lambda: validation_error_curve(history).figure),
                       ("widths_densities", lambda: widths_and_densities(history)),
                       ("first_layer_masks", lambda: first_layer_masks(first_mask, image_shape))):
        fig = draw()
        path = out_dir / f"{name}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def area_masks_on_image(area_mask, image, max_cols=10, fig=None):
    """Where each kernel of a convolution's first input map is still applied, over an image.

    area_mask: (O, C, Ho, Wo) 0/1, the kept output positions of each kernel (o, i); drawn
    for input map 0, centred on image: (H, W), H >= Ho and W >= Wo (a valid convolution's
    output sits (H - Ho) / 2 pixels in from the edge). One panel per output map.
    """
    kept_maps = np.asarray(area_mask)[:, 0]
    image = np.asarray(image)
    n_maps, (ho, wo) = len(kept_maps), kept_maps.shape[1:]
    top, left = (image.shape[0] - ho) // 2, (image.shape[1] - wo) // 2
    cols = min(n_maps, max_cols)
    rows = -(-n_maps // cols)
    fig = fig or plt.figure(figsize=(1.5 * cols, 1.7 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_visible(False)
    for o, ax in enumerate(axes[:n_maps]):
        kept = np.zeros(image.shape)
        kept[top:top + ho, left:left + wo] = kept_maps[o]
        ax.set_visible(True)
        ax.imshow(image, cmap="gray_r")
        ax.imshow(np.ma.masked_equal(kept, 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"map {o}: {int(kept_maps[o].sum())}/{ho * wo}", fontsize=8)
    fig.tight_layout()
    return fig


RUN_COLOURS = ("#2a9d8f", "#e76f51", "#264653", "#e9c46a")


def error_vs_size(runs, title=None, ax=None):
    """Validation error against params for every pruning round of each run (log scale), and
    each run's final test error as a star.

    runs: [(label, report, history)], the report.json and history.json dicts of each run.
    """
    ax = ax or plt.figure(figsize=(8, 4.5)).gca()
    for (label, report, history), colour in zip(runs, RUN_COLOURS, strict=False):
        pruned = [r for r in history if r["phase"] == "prune"]
        ax.semilogx([r["params"] for r in pruned], [100 * r["val_error"] for r in pruned], "o-",
                    ms=3, color=colour, label=f"{label}: pruning rounds (validation)")
        ax.semilogx([report["params"]], [100 * report["test_error"]], "*", ms=14, color=colour,
                    label=f"{label}: final, fine-tuned (test)")
    ax.set_xlabel("params (log scale; pruning goes from right to left)")
    ax.set_ylabel("error (%)")
    ax.set_title(title or "error against size")
    ax.legend(fontsize=8)
    return ax


def unit_survival_bars(survival, title=None, ax=None):
    """Seed and grown hidden units per layer: before pruning (pale) and surviving (solid).

    survival: {"layers", "seed_before", "grown_before", "seed_alive", "grown_alive"}, lists
    per hidden layer (``nestref.tools.walkthrough.unit_survival`` makes it).
    """
    ax = ax or plt.figure(figsize=(8, 3.6)).gca()
    where = np.arange(len(survival["layers"]))
    for offset, kind, colour in ((-0.2, "seed", "#999999"), (0.2, "grown", "#2a9d8f")):
        ax.bar(where + offset, survival[f"{kind}_before"], 0.38, color=colour, alpha=0.35,
               label=f"{kind}: before pruning")
        ax.bar(where + offset, survival[f"{kind}_alive"], 0.38, color=colour,
               label=f"{kind}: survive")
    ax.set_xticks(where, [f"hidden layer {k}" for k in survival["layers"]])
    ax.set_ylabel("units")
    ax.legend(fontsize=8)
    ax.set_title(title or "seed vs grown units")
    return ax


FRONTIER_STYLE = {
    "nest": ("#2a9d8f", "NeST"),
    "prune-only": ("#e76f51", "pruning only"),
    "dense": ("#264653", "dense"),
}


def _frontier_band(ax, rows, method):
    """One method's pruning trajectories (validation error per round, one per seed) on a
    common log-params grid: the median over seeds as a line, their range as a band."""
    colour, label = FRONTIER_STYLE[method]
    runs = {r["seed"]: r["trajectory"] for r in rows
            if r["method"] == method and r.get("trajectory")}
    curves = [np.array(sorted(t), dtype=float) for t in runs.values() if len(t) >= 2]
    if not curves:
        return
    low, high = max(c[:, 0].min() for c in curves), min(c[:, 0].max() for c in curves)
    if high <= low:
        return
    grid = np.geomspace(low, high, 60)
    ys = np.array([np.interp(np.log(grid), np.log(c[:, 0]), c[:, 1]) for c in curves])
    ax.plot(grid, 100 * np.median(ys, axis=0), color=colour,
            label=f"{label}: validation error along pruning (median of {seeds_label(len(curves))})")
    ax.fill_between(grid, 100 * ys.min(axis=0), 100 * ys.max(axis=0), color=colour, alpha=0.2, lw=0)


def _selection_points(ax, rows, method, selections, markers="osD^v<>p*h"):
    """Every seed's test error at each selection, one marker shape per selection."""
    colour, label = FRONTIER_STYLE[method]
    for k, selection in enumerate(selections):
        points = [(r["params"], r["test_error"]) for r in rows
                  if r["method"] == method and r["selection"] == selection]
        if points:
            p = np.array(points, dtype=float)
            ax.scatter(p[:, 0], 100 * p[:, 1], color=colour, marker=markers[k % len(markers)],
                       edgecolor="black", lw=0.5, zorder=3,
                       label=f"{label}, {selection}: test error per seed")


def frontier_figure(rows, path=None):
    """The error-vs-params frontier of a study, from its rows (``nestref.tools.study``) alone.

    Per arch, for NeST and pruning only: each seed's pruning trajectory (validation error
    per round, the rows' ``trajectory``) interpolated on a common log-params grid; the line
    is the median over seeds and the band their range. Markers: every seed's test error at
    each selection (one marker shape per selection); the dense runs' mean test error is a
    dashed line. Written to ``path`` (if given); returns the figure.
    """
    archs = sorted({r["arch"] for r in rows})
    n = max(1, len(archs))
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.5), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=False):  # no rows: one empty panel
        mine = [r for r in rows if r["arch"] == arch]
        for method in ("nest", "prune-only"):
            _frontier_band(ax, mine, method)
            _selection_points(ax, mine, method, sorted({r["selection"] for r in mine}))
        dense = [r["test_error"] for r in mine if r["method"] == "dense"]
        if dense:
            ax.axhline(100 * np.mean(dense), color=FRONTIER_STYLE["dense"][0], ls="--",
                       label=f"dense: mean test error ({seeds_label(len(dense))})")
        ax.set_xscale("log")
        ax.set_xlabel("params")
        ax.set_ylabel("error (%)")
        ax.set_title(arch)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
        plt.close(fig)
    return fig


def save_figure(fig, path):
    """Write ``fig`` as a PNG at ``path``, atomically (``storage``): never half a figure, and a
    full disk named with the file."""
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def seeds_label(n):
    """ "1 seed", "3 seeds"."""
    return f"{n} seed" + ("s" if n != 1 else "")
