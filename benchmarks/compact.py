"""Inference speed of a pruned LeNet-300-100: dense vs masked vs compacted.

    python scripts/bench_compact.py [--epochs 1] [--density 0.02] [--repeats 7]

Trains a dense LeNet-300-100 briefly on real MNIST (``--epochs 0``: random weights),
prunes a copy with rounds of ``prune_network`` (no retraining: this measures speed,
not accuracy) down to ``--density`` of its connections, compacts it, and times
``predict`` on the 10,000 test images for the three networks in the same run,
interleaved, taking the median of ``--repeats``. Prints times, ratios and test errors.

The machine may be shared: timings are medians, and the ratios are the numbers to
read (all three are timed under the same load).
"""
import argparse
import os
import statistics
import time

import numpy as np

from nestref.accounting import count_flops, count_params
from nestref.compact import compact
from nestref.data import load_mnist, train_val_split
from nestref.models import lenet_300_100
from nestref.optim import SGD
from nestref.prune import DEFAULT_PRUNE_FRACTIONS, prune_network
from nestref.train import fit, prepare_inputs


def density(net):
    active = sum(int((layer.mask != 0).sum()) for _, layer in net.masked_layers())
    return active / sum(layer.mask.size for _, layer in net.masked_layers())


def seconds_of(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the dense net (0: random weights)")
    parser.add_argument("--density", type=float, default=0.02, help="prune until this fraction of connections is active")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per network (the median is reported)")
    parser.add_argument("--batch-size", type=int, default=1000, help="predict batch size (the same for all three)")
    parser.add_argument("--data-dir", default=os.environ.get("NESTREF_DATA_DIR"))
    args = parser.parse_args(argv)

    mnist = load_mnist(args.data_dir, download=False)
    dense = lenet_300_100(seed=0)
    x_test, y_test = prepare_inputs(mnist.test_images, dense), mnist.test_labels
    if args.epochs > 0:
        train_x, train_y, val_x, val_y = train_val_split(mnist.train_images, mnist.train_labels, 5000, seed=0)
        fit(dense, SGD(dense, lr=0.05, momentum=0.9), (prepare_inputs(train_x, dense), train_y),
            (prepare_inputs(val_x, dense), val_y), epochs=args.epochs, batch_size=64, rng=0)

    masked = dense.copy()
    rounds = 0
    while density(masked) > args.density:
        prune_network(masked, DEFAULT_PRUNE_FRACTIONS["lenet-300-100"])
        rounds += 1
    small = compact(masked)

    nets = {"dense": dense.predict, "masked": masked.predict, "compact": small.predict}
    logits = {name: predict(x_test, args.batch_size) for name, predict in nets.items()}  # also warms up (JIT, caches)
    times = {name: [] for name in nets}
    for _ in range(args.repeats):  # interleaved, so that load changes hit all three alike
        for name, predict in nets.items():
            times[name].append(seconds_of(lambda: predict(x_test, args.batch_size)))
    seconds = {name: statistics.median(t) for name, t in times.items()}

    print(f"LeNet-300-100, {args.epochs} training epoch(s); pruned in {rounds} rounds of "
          f"{DEFAULT_PRUNE_FRACTIONS['lenet-300-100']} to density {density(masked):.4f} "
          f"({count_params(masked)} params, {count_flops(masked)} FLOPs per image)")
    print(f"compact layers: {small.summary()}")
    print(f"predict on {len(x_test)} test images, batch {args.batch_size}, median of {args.repeats} (shared machine):")
    for name in nets:
        error = float((logits[name].argmax(axis=1) != y_test).mean())
        print(f"  {name:8s} {seconds[name] * 1e3:9.2f} ms   test error {error:.4f}")
    print(f"  compact vs dense:  {seconds['dense'] / seconds['compact']:.1f}x faster")
    print(f"  compact vs masked: {seconds['masked'] / seconds['compact']:.1f}x faster")
    print(f"  max |compact - masked| logit: {np.abs(logits['compact'] - logits['masked']).max():.2e}")


if __name__ == "__main__":
    main()
