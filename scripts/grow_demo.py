"""NeST growth on a real MNIST seed: connection growth, then neuron growth.

    python scripts/grow_demo.py    # MNIST: the repository's data/mnist, or $NESTREF_DATA_DIR

Builds the LeNet-120-40 seed (lenet_300_100 with width_scale 0.4, 10% of connections
active), trains it for one epoch, then grows it on a batch held out from training
(the validation part of the training split) and prints params and loss after each step.
The loss is shown on the growth batch itself and on the rest of the validation part,
which growth never saw. Takes well under a minute.
"""
import time

from nestref.core.optim import SGD
from nestref.core.train import evaluate, fit, prepare_inputs
from nestref.data.datasets import load_mnist, train_val_split
from nestref.nest.grow import (
    birth_strength_ladder,
    grow_network_connections,
    grow_neurons,
    growth_gradients,
    network_bridging_gradient,
)
from nestref.nest.networks import lenet_300_100

GROWTH_BATCH = 2000


def params(net):
    """Active weights + biases of every unit."""
    return int(sum(layer.mask.sum() + layer.bias.size for _, layer in net.masked_layers()))


def main():
    t0 = time.perf_counter()
    mnist = load_mnist(download=False)  # $NESTREF_DATA_DIR, else the repository's data/mnist
    train_images, train_labels, val_images, val_labels = train_val_split(
        mnist.train_images, mnist.train_labels, n_val=5000, seed=0)

    net = lenet_300_100(width_scale=0.4, density=0.1, seed=0)
    opt = SGD(net, lr=0.05, momentum=0.9)
    x_train = prepare_inputs(train_images, net)
    x_val = prepare_inputs(val_images, net)
    record = fit(net, opt, (x_train, train_labels), None, epochs=1, batch_size=64, rng=0)[0]
    print(f"trained {net.name} for 1 epoch: train loss {record['train_loss']:.4f} "
          f"({record['seconds']:.1f} s)\n")

    xg, yg = x_val[:GROWTH_BATCH], val_labels[:GROWTH_BATCH]     # growth data
    xr, yr = x_val[GROWTH_BATCH:], val_labels[GROWTH_BATCH:]     # never used for growth
    rows = []

    def row(stage):
        g, r = evaluate(net, xg, yg), evaluate(net, xr, yr)
        rows.append(
            (stage, "-".join(map(str, net.widths())), params(net), g["loss"], r["loss"], r["error"])
        )

    row("trained seed")

    gradients = growth_gradients(net, xg, yg, batch_size=256)
    conn = grow_network_connections(net, 0.1, gradients, init="gradient", lr=opt.lr)
    row("+ connections (10%/layer)")

    # every bridging gradient on the pre-growth network (docs/nest.md): a neuron new in
    # layer 0 gets no part in layer 2's new neurons
    bridges = {p: network_bridging_gradient(net, p, xg, yg) for p in (0, 2)}
    neurons = [
        grow_neurons(
            net,
            p,
            10,
            xg,
            yg,
            birth_ratio=0.05,
            birth_strength=birth_strength_ladder(),
            optimizer=opt,
            bridging=bridges[p],
        )
        for p in (0, 2)
    ]
    row("+ 10 neurons/hidden layer")

    print(
        f"{'stage':<28}{'widths':>12}{'params':>9}"
        f"{'loss (growth)':>15}{'loss (rest)':>13}{'err (rest)':>12}"
    )
    for stage, widths, n, lg, lr_, er in rows:
        print(f"{stage:<28}{widths:>12}{n:>9,}{lg:>15.5f}{lr_:>13.5f}{er:>11.2%}")

    print("\nconnection growth per layer:")
    for r in conn:
        print(f"  layer {r.layer}: {r.added:>6,} of {r.dormant_before:>6,} dormant grown "
              f"(candidates with |G|>0: {r.candidates:,}), smallest |G| grown {r.threshold:.2e}")
    print("neuron growth per layer:")
    for r in neurons:
        tried = ", ".join(
            f"{a:.3g}->{loss:.5f}" for a, loss in zip(r.ladder, r.ladder_losses, strict=True)
        )
        alpha = "none" if r.birth_strength is None else f"{r.birth_strength:.3g}"
        print(f"  layer {r.layer}: added {r.added}/{r.requested}, {r.pairs_per_chunk} pairs each, "
              f"alpha {alpha}; ladder (alpha->loss): {tried}"
              + (f"; {r.reason}" if r.reason else ""))
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
