"""Training speed of nestref against PyTorch on the CPU.

    python -m benchmarks.training [--quick] [--networks lenet-300-100 lenet5] [--threads 2]


What is timed, for each network: ``n_batches`` training steps (forward, softmax
cross-entropy, backward, SGD momentum step) at batch 64 in float32, after a few
warm-up steps (Numba compilation, BLAS thread start-up and first-touch page faults
are left out). Each timing is repeated and the median is reported; nestref and
PyTorch take turns, repeat by repeat, so that a burst of load from elsewhere on the
machine hits both.

PyTorch runs the same network (built layer by layer from the nestref one, starting
from the same weights, so both compute the same function: their first-batch losses
are reported side by side as a check), the same SGD (lr, momentum, no dampening) and
the same number of threads as nestref's BLAS. The ratio nestref time / PyTorch time
is printed beside the targets (``TARGETS``).

Throughput is given in GFLOP/s of *nominal* training FLOPs: 3 x the dense forward FLOPs
(``nestref.nest.accounting.count_flops`` of the built network), the usual rule of thumb for
forward + input gradient + weight gradient **[ours]**. The machine's float32 GEMM peak,
measured in the same run with one large ``np.matmul``, puts them in proportion.

PyTorch is optional (the ``bench`` extra): it is imported only inside the functions
that need it. BLAS threads are read and set through threadpoolctl.
"""

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from nestref.core.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from nestref.core.network import loss_and_grads
from nestref.core.optim import SGD
from nestref.data import datasets as data
from nestref.nest.accounting import count_flops
from nestref.nest.networks import build

from .common import blas_threads, describe_blas, limited_blas, load_average, seconds, timed_in_turns

NETWORKS = ("lenet-300-100", "lenet5")
TRAINING_FLOPS_PER_FORWARD = 3
TARGETS = {"lenet-300-100": 0.8, "lenet5": 0.9}  # nestref time / PyTorch time, at most
DEFAULT_BATCHES = {"lenet-300-100": 500, "lenet5": 200}
QUICK_BATCHES = {"lenet-300-100": 50, "lenet5": 10}
EPOCH_IMAGES = 55_000  # MNIST's training set less the 5,000 validation images
SLOW_BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ------------------------------------------------------------------ measurements
def matmul_peak_gflops(size=2048, repeats=3):
    """Best float32 GFLOP/s of ``np.matmul`` on two (size, size) matrices: the GEMM peak."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b  # warm-up: threads started, pages touched
    best = min(seconds(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def forward_flops(arch):
    """Dense forward FLOPs per image of ``arch``, counted by ``nestref.nest.accounting``."""
    return count_flops(build(arch))


def make_batches(arch, batch_size, n_distinct, data_dir=None, seed=0):
    """A pool of training batches for ``arch`` and where they came from.

    Real MNIST if ``load_mnist`` finds it on disk (no download), else uniform random
    pixels and labels of the same shapes: the speed does not depend on the values.
    returns ([(x (B, *input_shape) float32, y (B,) int64)], source string)
    """
    input_shape = build(arch).input_shape
    n = batch_size * n_distinct
    rng = np.random.default_rng(seed)
    try:
        mnist = data.load_mnist(data_dir, download=False)
        pick = rng.permutation(len(mnist.train_images))[:n]
        x = data.scale_pixels(mnist.train_images[pick])
        y = np.asarray(mnist.train_labels[pick], dtype=np.int64)
        source = f"MNIST ({mnist.source})"
    except (data.MNISTNotFoundError, data.IDXError):
        x = rng.random((n, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, n).astype(np.int64)
        source = "random data (MNIST not found)"
    x = x.reshape((n,) + input_shape)
    batches = [
        (np.ascontiguousarray(x[i : i + batch_size]), y[i : i + batch_size])
        for i in range(0, n, batch_size)
    ]
    return batches, source


def torch_twin(net):
    """The same network in PyTorch (torch.nn.Sequential), with nestref's current weights."""
    import torch
    from torch import nn

    modules = []
    for layer in net.layers:
        if isinstance(layer, Dense):
            module = nn.Linear(layer.n_in, layer.n_out)
        elif isinstance(layer, Conv2d):
            module = nn.Conv2d(
                layer.n_in, layer.n_out, layer.kernel_size, layer.stride, layer.padding
            )
        elif isinstance(layer, MaxPool2d):
            module = nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, ReLU):
            module = nn.ReLU()
        elif isinstance(layer, Flatten):
            module = nn.Flatten()
        else:
            raise ValueError(f"no PyTorch twin for {layer!r}")
        if isinstance(layer, (Dense, Conv2d)):
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(layer.effective_weight()))
                module.bias.copy_(torch.from_numpy(layer.bias))
        modules.append(module)
    return nn.Sequential(*modules)


def _nestref_runner(net, optimizer, batches):
    def run(n_batches):
        for b in range(n_batches):
            x, y = batches[b % len(batches)]
            loss_and_grads(net, x, y)
            optimizer.step()

    return run


def _torch_runner(model, optimizer, batches):
    import torch
    import torch.nn.functional as F

    tensors = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

    def run(n_batches):
        for b in range(n_batches):
            x, y = tensors[b % len(tensors)]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    return run


def _torch_first_loss(model, batch):
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        return float(F.cross_entropy(model(torch.from_numpy(batch[0])), torch.from_numpy(batch[1])))


def _timing(seconds, n_batches, batch_size, arch, peak):
    median = statistics.median(seconds)
    gflops = (
        TRAINING_FLOPS_PER_FORWARD * forward_flops(arch) * batch_size * n_batches / median / 1e9
    )
    return {
        "seconds": list(seconds),
        "median_seconds": median,
        "ms_per_batch": 1e3 * median / n_batches,
        "seconds_per_epoch": median / n_batches * math.ceil(EPOCH_IMAGES / batch_size),
        "gflops": gflops,
        "fraction_of_peak": gflops / peak if peak else None,
    }


def torch_available():
    """True if PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_benchmark(
    networks=NETWORKS,
    batches=None,
    batch_size=64,
    repeats=3,
    warmup=5,
    threads=None,
    use_torch=True,
    data_dir=None,
    lr=0.01,
    momentum=0.9,
    peak_size=2048,
    seed=0,
):
    """Time training of each network in nestref and, if installed and wanted, PyTorch.

    networks: names from ``NETWORKS``; batches: {name: timed batches} or one int for
    all (default ``DEFAULT_BATCHES``); threads: BLAS and PyTorch threads (None: the
    BLAS's current count). Returns plain data (JSON-ready):
        {"settings": {...}, "environment": {...}, "peak_gflops": float,
         "networks": {name: {"batches", "data", "first_loss": {"nestref", "torch"},
                             "nestref": timing, "torch": timing or None,
                             "ratio": nestref / torch median or None, "target", "meets_target"}}}
    where timing = {"seconds" (each repeat), "median_seconds", "ms_per_batch",
    "seconds_per_epoch" (of ``EPOCH_IMAGES`` images), "gflops", "fraction_of_peak"}.
    """
    networks = tuple(networks)
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown or not networks:
        raise ValueError(f"networks must be a non-empty selection of {NETWORKS}, got {networks}")
    if batches is None:
        batches = DEFAULT_BATCHES
    elif isinstance(batches, int):
        batches = {n: batches for n in networks}
    for name in networks:
        if not isinstance(batches.get(name), int) or batches[name] < 1:
            raise ValueError(f"batches for {name} must be an int >= 1, got {batches.get(name)!r}")
    for label, value, low in (
        ("batch_size", batch_size, 1),
        ("repeats", repeats, 1),
        ("warmup", warmup, 1),
        ("peak_size", peak_size, 16),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None or an int >= 1, got {threads!r}")
    if use_torch and not torch_available():
        use_torch = False

    with (
        limited_blas(threads),
        _torch_threads(threads if threads else blas_threads(), use_torch) as torch_threads,
    ):
        environment = {
            "blas": describe_blas(),
            "blas_threads": blas_threads(),
            "torch_threads": torch_threads,
            "torch_version": _torch_version() if use_torch else None,
            "numpy_version": np.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": load_average(),
            "slow_blas_variables": {
                v: os.environ[v] for v in SLOW_BLAS_VARIABLES if v in os.environ
            },
        }
        peak = matmul_peak_gflops(peak_size)
        results = {}
        for name in networks:
            results[name] = _bench_network(
                name,
                batches[name],
                batch_size,
                repeats,
                warmup,
                use_torch,
                data_dir,
                lr,
                momentum,
                peak,
                seed,
            )
        environment["load_average_after"] = load_average()
    settings = {
        "networks": list(networks),
        "batches": {n: batches[n] for n in networks},
        "batch_size": batch_size,
        "repeats": repeats,
        "warmup": warmup,
        "lr": lr,
        "momentum": momentum,
        "dtype": "float32",
        "peak_size": peak_size,
        "training_flops_per_forward": TRAINING_FLOPS_PER_FORWARD,
    }
    return {
        "settings": settings,
        "environment": environment,
        "peak_gflops": peak,
        "networks": results,
    }


def _bench_network(
    name, n_batches, batch_size, repeats, warmup, use_torch, data_dir, lr, momentum, peak, seed
):
    pool, source = make_batches(name, batch_size, min(n_batches, 50), data_dir, seed)
    net = build(name, seed=seed)
    optimizer = SGD(net, lr=lr, momentum=momentum)
    runners = {"nestref": _nestref_runner(net, optimizer, pool)}
    first_loss = {"nestref": float(loss_and_grads(net, *pool[0])[0]), "torch": None}
    if use_torch:
        import torch

        model = torch_twin(net)  # before any step: both start from the same weights
        first_loss["torch"] = _torch_first_loss(model, pool[0])
        runners["torch"] = _torch_runner(
            model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum), pool
        )
    for run in runners.values():
        run(warmup)
    times = timed_in_turns(
        {key: (lambda run=run: run(n_batches)) for key, run in runners.items()}, repeats
    )
    result = {
        "batches": n_batches,
        "data": source,
        "first_loss": first_loss,
        "nestref": _timing(times["nestref"], n_batches, batch_size, name, peak),
        "torch": None,
        "ratio": None,
        "target": TARGETS[name],
        "meets_target": None,
    }
    if use_torch:
        result["torch"] = _timing(times["torch"], n_batches, batch_size, name, peak)
        result["ratio"] = result["nestref"]["median_seconds"] / result["torch"]["median_seconds"]
        result["meets_target"] = bool(result["ratio"] <= TARGETS[name])
    return result


@contextlib.contextmanager
def _torch_threads(n, use_torch):
    """Set PyTorch's intra-op threads to n for the body; yields the count (None without torch)."""
    if not use_torch:
        yield None
        return
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _torch_version():
    import torch

    return torch.__version__


# ------------------------------------------------------------------ profile
def profile_layers(arch="lenet5", n_batches=20, batch_size=64, data_dir=None, seed=0):
    """Milliseconds per batch spent in each layer's forward and backward, the loss and the SGD step.

    Warm-up batches are not counted. returns {"arch", "rows": [{"layer", "forward_ms",
    "backward_ms"}], "loss_ms", "step_ms", "total_ms"}.
    """
    if arch not in NETWORKS:
        raise ValueError(f"arch must be one of {NETWORKS}, got {arch!r}")
    from nestref.core.losses import softmax_cross_entropy

    pool, _ = make_batches(arch, batch_size, min(n_batches, 50), data_dir, seed)
    net = build(arch, seed=seed)
    optimizer = SGD(net, lr=0.01, momentum=0.9)
    n_layers = len(net.layers)
    totals = {"forward": [0.0] * n_layers, "backward": [0.0] * n_layers, "loss": 0.0, "step": 0.0}
    for b in range(-3, n_batches):  # the first three are warm-up
        x, y = pool[b % len(pool)]
        times = {"forward": [0.0] * n_layers, "backward": [0.0] * n_layers}
        for i, layer in enumerate(net.layers):
            start = time.perf_counter()
            x = layer.forward(x)
            times["forward"][i] = time.perf_counter() - start
        start = time.perf_counter()
        _, grad = softmax_cross_entropy(x, y)
        loss_seconds = time.perf_counter() - start
        for i in reversed(range(n_layers)):
            start = time.perf_counter()
            grad = net.layers[i].backward(grad, input_grad=i > 0)
            times["backward"][i] = time.perf_counter() - start
        step_seconds = seconds(optimizer.step)
        if b >= 0:
            for key in ("forward", "backward"):
                totals[key] = [t + s for t, s in zip(totals[key], times[key], strict=True)]
            totals["loss"] += loss_seconds
            totals["step"] += step_seconds
    ms = lambda s: 1e3 * s / n_batches  # noqa: E731
    rows = [
        {
            "layer": repr(layer),
            "forward_ms": ms(totals["forward"][i]),
            "backward_ms": ms(totals["backward"][i]),
        }
        for i, layer in enumerate(net.layers)
    ]
    total = sum(totals["forward"]) + sum(totals["backward"]) + totals["loss"] + totals["step"]
    return {
        "arch": arch,
        "rows": rows,
        "loss_ms": ms(totals["loss"]),
        "step_ms": ms(totals["step"]),
        "total_ms": ms(total),
    }


# ------------------------------------------------------------------ printing
def format_results(results):
    """The benchmark's table as text."""
    env, settings = results["environment"], results["settings"]
    lines = [
        f"nestref training benchmark: batch {settings['batch_size']}, float32, "
        f"SGD(lr={settings['lr']}, momentum={settings['momentum']}), "
        f"median of {settings['repeats']} repeats "
        f"after {settings['warmup']} warm-up batches"
    ]
    lines.append(
        f"BLAS: {env['blas']}, {env['blas_threads']} thread(s); "
        + (
            f"PyTorch {env['torch_version']}, {env['torch_threads']} thread(s)"
            if env["torch_version"]
            else "PyTorch not installed or not wanted: nestref only"
        )
    )
    lines.append(
        f"float32 matmul peak ({settings['peak_size']}x{settings['peak_size']}, best of 3): "
        f"{results['peak_gflops']:.1f} GFLOP/s;  load average {env['load_average_before']} -> "
        f"{env['load_average_after']} on {env['cpus']} CPUs (above ~0.5 the numbers are noisy)"
    )
    for variable, value in env["slow_blas_variables"].items():
        lines.append(
            f"note: {variable}={value} is set; it can pick a slower OpenBLAS kernel "
            f"(unset {', '.join(SLOW_BLAS_VARIABLES)} together to benchmark the default)"
        )
    lines.append(
        "training GFLOP/s count 3 x dense forward FLOPs per image (nestref.nest.accounting) "
        + ", ".join(f"{n} {forward_flops(n):,}" for n in settings["networks"])
    )
    lines.append("")
    header = (
        f"{'network':<14} {'batches':>7}  {'nestref ms/batch':>16} {'GFLOP/s':>8} {'%peak':>6}"
        f"  {'torch ms/batch':>14} {'GFLOP/s':>8} {'%peak':>6}  {'ratio':>6}  target"
    )
    lines += [header, "-" * len(header)]
    for name, r in results["networks"].items():
        ours, theirs = r["nestref"], r["torch"]
        row = (
            f"{name:<14} {r['batches']:>7}  {ours['ms_per_batch']:>16.3f} {ours['gflops']:>8.2f} "
            f"{100 * ours['fraction_of_peak']:>5.1f}%"
        )
        if theirs is None:
            row += f"  {'-':>14} {'-':>8} {'-':>6}  {'-':>6}  <= {r['target']}"
        else:
            verdict = "met" if r["meets_target"] else "NOT met"
            row += (
                f"  {theirs['ms_per_batch']:>14.3f} {theirs['gflops']:>8.2f} "
                f"{100 * theirs['fraction_of_peak']:>5.1f}%"
                f"  {r['ratio']:>6.2f}  <= {r['target']} {verdict}"
            )
        lines.append(row)
    lines.append("")
    for name, r in results["networks"].items():
        loss = r["first_loss"]
        check = "" if loss["torch"] is None else f", PyTorch {loss['torch']:.6f}"
        epoch = f"{r['nestref']['seconds_per_epoch']:.1f} s" + (
            "" if r["torch"] is None else f" vs PyTorch {r['torch']['seconds_per_epoch']:.1f} s"
        )
        lines.append(
            f"{name}: data {r['data']}; one {EPOCH_IMAGES:,}-image epoch {epoch}; "
            f"first-batch loss nestref {loss['nestref']:.6f}{check}; "
            f"seconds per repeat nestref {_seconds_list(r['nestref'])}"
            + ("" if r["torch"] is None else f", PyTorch {_seconds_list(r['torch'])}")
        )
    return "\n".join(lines)


def _seconds_list(timing):
    return "[" + ", ".join(f"{s:.3f}" for s in timing["seconds"]) + "]"


def format_profile(profile):
    """A profile from ``profile_layers`` as text."""
    width = max(len(row["layer"]) for row in profile["rows"] + [{"layer": "softmax cross-entropy"}])
    lines = [
        f"{profile['arch']}: ms per batch by layer (total {profile['total_ms']:.2f} ms)",
        f"  {'layer':<{width}} {'forward':>8} {'backward':>9}",
    ]
    for row in profile["rows"]:
        lines.append(
            f"  {row['layer']:<{width}} {row['forward_ms']:>8.3f} {row['backward_ms']:>9.3f}"
        )
    lines.append(f"  {'softmax cross-entropy':<{width}} {profile['loss_ms']:>8.3f}")
    lines.append(f"  {'SGD step (all layers)':<{width}} {profile['step_ms']:>8.3f}")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.training",
        description="time nestref's training against PyTorch's on the CPU",
    )
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument(
        "--batches",
        type=int,
        help=f"timed batches per repeat, for every network "
        f"(default: {DEFAULT_BATCHES}; with --quick {QUICK_BATCHES})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few batches and a smaller peak GEMM: a smoke run"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument(
        "--threads", type=int, help="BLAS and PyTorch threads (default: the BLAS's current count)"
    )
    parser.add_argument("--no-torch", action="store_true", help="time nestref alone")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument(
        "--data-dir",
        help="directory with the MNIST IDX files (else $NESTREF_DATA_DIR, the cache; "
        "random data if none: the speed does not depend on the values)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print time per layer for each network"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    batches = (
        args.batches
        if args.batches is not None
        else (QUICK_BATCHES if args.quick else DEFAULT_BATCHES)
    )
    try:
        results = run_benchmark(
            args.networks,
            batches,
            args.batch_size,
            args.repeats,
            args.warmup,
            args.threads,
            not args.no_torch,
            args.data_dir,
            args.lr,
            args.momentum,
            peak_size=1024 if args.quick else 2048,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.no_torch and results["environment"]["torch_version"] is None:
        print("PyTorch is not installed (pip install 'nestref[bench]'): timing nestref alone\n")
    print(format_results(results))
    if args.profile:
        with limited_blas(args.threads):
            for name in args.networks:
                print()
                print(
                    format_profile(
                        profile_layers(
                            name, 10 if args.quick else 50, args.batch_size, args.data_dir
                        )
                    )
                )
    if args.json:
        from nestref.data.storage import save_json

        save_json(args.json, results)
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
