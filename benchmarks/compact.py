"""Inference of a LeNet-300-100 pruned to ~2% density: compact vs dense nestref vs dense PyTorch.

    python -m benchmarks.compact [--quick] [--epochs 1] [--density 0.02] [--repeats 7] [--threads N]

Trains a dense LeNet-300-100 briefly on real MNIST (``--epochs 0``: random weights),
prunes a copy with rounds of ``prune_network`` (no retraining: this measures speed,
not accuracy) down to ``--density`` of its connections, compacts it, and times
``predict`` on the 10,000 test images (random images if MNIST is not found) for the
dense network, the masked one, the compact one and the dense network in PyTorch, in
turns, taking the median of ``--repeats``. Prints times, the ratios, test errors and
the load average: the ratios are the numbers to read (all are timed under the same load).
"""

import argparse
import os
import sys

import numpy as np

from nestref.core.optim import SGD
from nestref.core.train import fit, prepare_inputs
from nestref.data import datasets as data
from nestref.nest.accounting import count_flops, count_params
from nestref.nest.networks import lenet_300_100
from nestref.nest.prune import DEFAULT_PRUNE_FRACTIONS, prune_network
from nestref.run.compact import compact

from .common import (
    blas_threads,
    check_positive_ints,
    limited_blas,
    load_average,
    median,
    thread_counts,
    timed_in_turns,
)
from .training import torch_available, torch_twin

TARGETS = {"dense": 10.0, "torch": 5.0}  # compact must be at least this many times faster


def density(net):
    active = sum(int((layer.mask != 0).sum()) for _, layer in net.masked_layers())
    return active / sum(layer.mask.size for _, layer in net.masked_layers())


def test_images(data_dir, n_images, seed=0):
    """(x (N, 784) float32, y (N,), training split or None, where they came from)."""
    try:
        mnist = data.load_mnist(data_dir, download=False)
    except (data.MNISTNotFoundError, data.IDXError):
        rng = np.random.default_rng(seed)
        return (
            rng.random((n_images, 784), dtype=np.float32),
            rng.integers(0, 10, n_images),
            None,
            "random images (MNIST not found)",
        )
    x = data.scale_pixels(mnist.test_images[:n_images]).reshape(-1, 784).astype(np.float32)
    return x, np.asarray(mnist.test_labels[:n_images]), mnist, f"MNIST test images ({mnist.source})"


def pruned_nets(mnist, epochs, target_density, seed=0):
    dense = lenet_300_100(seed=seed)
    if epochs > 0 and mnist is not None:
        train_x, train_y, val_x, val_y = data.train_val_split(
            mnist.train_images, mnist.train_labels, 5000, seed=0
        )
        fit(
            dense,
            SGD(dense, lr=0.05, momentum=0.9),
            (prepare_inputs(train_x, dense), train_y),
            (prepare_inputs(val_x, dense), val_y),
            epochs=epochs,
            batch_size=64,
            rng=0,
        )
    masked, rounds = dense.copy(), 0
    while density(masked) > target_density:
        prune_network(masked, DEFAULT_PRUNE_FRACTIONS["lenet-300-100"])
        rounds += 1
    return dense, masked, rounds


def measure(
    epochs=1,
    target_density=0.02,
    repeats=7,
    batch_size=1000,
    n_images=10_000,
    threads=None,
    use_torch=True,
    data_dir=None,
):
    check_positive_ints(repeats=repeats, batch_size=batch_size, n_images=n_images)
    x, y, mnist, source = test_images(data_dir, n_images)
    dense, masked, rounds = pruned_nets(mnist, epochs, target_density)
    small = compact(masked)
    predictors = {"dense": dense.predict, "masked": masked.predict, "compact": small.predict}
    with limited_blas(threads):
        if use_torch and torch_available():
            import torch

            torch.set_num_threads(threads or blas_threads() or 1)
            model, tx = torch_twin(dense).eval(), torch.from_numpy(x)

            def torch_predict(x_, batch):
                with torch.no_grad():
                    return torch.cat(
                        [model(tx[i : i + batch]) for i in range(0, len(tx), batch)]
                    ).numpy()

            predictors["torch"] = torch_predict
        logits = {
            name: predict(x, batch_size) for name, predict in predictors.items()
        }  # warm-up too
        load_before = load_average()
        times = timed_in_turns(
            {name: (lambda p=p: p(x, batch_size)) for name, p in predictors.items()}, repeats
        )
        threads_used = thread_counts()
    ms = {name: 1e3 * median(t) for name, t in times.items()}
    return {
        "data": source,
        "images": len(x),
        "epochs": epochs,
        "rounds": rounds,
        "density": density(masked),
        "params": count_params(masked),
        "flops_per_image": count_flops(masked),
        "dense_flops_per_image": count_flops(dense),
        "layers": small.summary(),
        "batch_size": batch_size,
        "repeats": repeats,
        **threads_used,
        "load_average": [load_before, load_average()],
        "ms": ms,
        "errors": {name: float((out.argmax(axis=1) != y).mean()) for name, out in logits.items()},
        "compact_vs_masked_max_logit_gap": float(
            np.abs(logits["compact"] - logits["masked"]).max()
        ),
        "speedup": {name: ms[name] / ms["compact"] for name in ms if name != "compact"},
    }


def format_results(r):
    lines = [
        f"LeNet-300-100, {r['epochs']} training epoch(s), pruned in {r['rounds']} rounds "
        f"to density "
        f"{r['density']:.4f} ({r['params']} params, {r['flops_per_image']} FLOPs per image vs "
        f"{r['dense_flops_per_image']} dense)",
        f"compact layers: {r['layers']}",
        f"predict on {r['images']} {r['data']}, batch {r['batch_size']}, median of {r['repeats']}, "
        f"{r['blas_threads']} BLAS thread(s), {r['numba_threads']} compact-inference thread(s), "
        f"load average {r['load_average'][0]} -> {r['load_average'][1]}:",
    ]
    for name, ms in r["ms"].items():
        lines.append(f"  {name:8s} {ms:9.2f} ms   test error {r['errors'][name]:.4f}")
    for name, speedup in r["speedup"].items():
        target = f"   (target >= {TARGETS[name]:g}x)" if name in TARGETS else ""
        lines.append(f"  compact vs {name:7s}: {speedup:6.2f}x faster{target}")
    lines.append(f"  max |compact - masked| logit: {r['compact_vs_masked_max_logit_gap']:.2e}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compact", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: random weights, 1,000 images, 1 repeat"
    )
    parser.add_argument(
        "--epochs", type=int, help="training epochs of the dense net (default 1; 0: random weights)"
    )
    parser.add_argument(
        "--density", type=float, default=0.02, help="prune until this fraction is active"
    )
    parser.add_argument("--repeats", type=int, help="timed runs per network (default 7)")
    parser.add_argument("--images", type=int, help="test images (default 10,000)")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="predict batch size (the same for all)"
    )
    parser.add_argument(
        "--threads", type=int,
        help="BLAS, PyTorch and compact-inference (Numba) threads (default: as they are)"
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--data-dir", default=os.environ.get("NESTREF_DATA_DIR"))
    args = parser.parse_args(argv)
    quick = args.quick
    try:
        results = measure(
            args.epochs if args.epochs is not None else (0 if quick else 1),
            args.density,
            args.repeats or (1 if quick else 7),
            args.batch_size,
            args.images or (1000 if quick else 10_000),
            args.threads,
            not args.no_torch,
            args.data_dir,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
