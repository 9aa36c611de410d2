"""The ``nestref`` command: train, synthesize, report (benchmarks: ``python -m benchmarks.NAME``).

Only this module talks to the screen: it turns the callbacks of the loops into a
progress bar and lines of text.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import data
from .augment import random_affine
from .models import ARCHITECTURES, build
from .optim import SCHEDULES, SGD
from .train import TrainingDiverged, evaluate, fit, load_checkpoint, prepare_inputs, save_checkpoint

# Recipes for the dense baselines (README: "Dense baselines").
TRAIN_RECIPES = {
    "lenet-300-100": {"epochs": 30, "lr": 0.05, "batch_size": 64, "weight_decay": 1e-4},
    "lenet5": {"epochs": 15, "lr": 0.02, "batch_size": 64, "weight_decay": 5e-4},
}


def _progress(desc, disable):
    """A tqdm bar driven by the loop's on_batch callback."""
    from tqdm.auto import tqdm
    state = {"bar": None}

    def on_batch(b, n, loss):
        if state["bar"] is None:
            state["bar"] = tqdm(total=n, desc=desc(), leave=False, disable=disable, file=sys.stderr)
        state["bar"].update(1)
        if b % 50 == 0:
            state["bar"].set_postfix(loss=f"{loss:.4f}")
        if b == n - 1:
            state["bar"].close()
            state["bar"] = None
    return on_batch


def load_splits(data_dir, n_val, seed):
    """MNIST as (train, val, test) pairs of (uint8 images, int64 labels)."""
    mnist = data.load_mnist(data_dir)
    tx, ty, vx, vy = data.train_val_split(mnist.train_images, mnist.train_labels, n_val=n_val, seed=seed)
    return (tx, ty), (vx, vy), (mnist.test_images, mnist.test_labels), mnist.source


def cmd_train(args):
    recipe = TRAIN_RECIPES[args.arch]
    epochs = args.epochs if args.epochs is not None else recipe["epochs"]
    lr = args.lr if args.lr is not None else recipe["lr"]
    batch_size = args.batch_size or recipe["batch_size"]
    weight_decay = args.weight_decay if args.weight_decay is not None else recipe["weight_decay"]
    out = Path(args.out or f"runs/{args.arch}/model.npz")

    train, val, test, source = load_splits(args.data_dir, args.n_val, args.seed)
    start_epoch, rng, records = 0, np.random.default_rng(args.seed), []
    if args.resume and out.exists():
        net, optimizer, state = load_checkpoint(out)
        start_epoch, records = state["epoch"], state["records"]
        rng.bit_generator.state = state["rng"]
        print(f"resuming {out} at epoch {start_epoch + 1}/{epochs}")
    else:
        net = build(args.arch, width_scale=args.width_scale, density=args.density, seed=args.seed)
        optimizer = SGD(net, lr=lr, momentum=args.momentum, weight_decay=weight_decay)
    print(f"{net.name}: data from {source}; {len(train[0])} train / {len(val[0])} validation / "
          f"{len(test[0])} test images; epochs={epochs} lr={lr} batch={batch_size} "
          f"schedule={args.schedule} weight_decay={weight_decay} augment={args.augment}")

    to_xy = lambda split: (prepare_inputs(split[0], net), split[1])  # noqa: E731
    current = {"epoch": start_epoch}

    def on_epoch(record):
        records.append(record)
        current["epoch"] = record["epoch"]
        save_checkpoint(out, net, optimizer, {"epoch": record["epoch"], "records": records,
                                             "rng": rng.bit_generator.state, "arch": args.arch})
        print(f"epoch {record['epoch']:3d}/{epochs}  lr {record['lr']:.4g}  train loss {record['train_loss']:.4f}  "
              f"val error {100 * record['val_error']:.2f}%  ({record['seconds']:.1f} s)", flush=True)

    on_batch = _progress(lambda: f"epoch {current['epoch'] + 1}/{epochs}", args.no_progress)
    schedule = SCHEDULES[args.schedule](lr)
    try:
        fit(net, optimizer, to_xy(train), to_xy(val), epochs, schedule, batch_size, rng, start_epoch,
            on_epoch=on_epoch, on_batch=on_batch, augment=random_affine if args.augment else None)
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}. The last good checkpoint is {out}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with the same command and --resume (checkpoint: {out})", file=sys.stderr)
        return 130
    v = evaluate(net, *to_xy(val))
    t = evaluate(net, *to_xy(test))
    seconds = sum(r["seconds"] for r in records)
    print(f"done: validation error {100 * v['error']:.2f}%  test error {100 * t['error']:.2f}%  "
          f"({seconds:.0f} s of training, {seconds / max(1, len(records)):.1f} s/epoch); model: {out}")
    return 0


def cmd_synthesize(args):
    from .config import PRESETS, make_config, parse_override
    from .synthesize import synthesize
    preset = args.preset or (args.arch if args.arch in PRESETS else None)
    overrides = dict(parse_override(item) for item in args.set)
    if args.arch:
        overrides["arch"] = args.arch
    if args.mode:
        overrides["mode"] = args.mode
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    config = make_config(preset, args.config, overrides)
    out = Path(args.out or f"runs/{preset or config.arch}{'-prune-only' if config.mode == 'prune-only' else ''}")
    print(f"nestref synthesize: {config.arch}, mode {config.mode}, preset {preset}, output {out}")

    def on_round(rec):
        line = (f"{rec['phase']:>8} {rec['round']:3d}  params {rec['params']:8d}  FLOPs {rec['flops']:9d}  "
                f"widths {rec['widths']}  val error {100 * rec['val_error']:.2f}%  ({rec['seconds']:.1f} s)")
        print(line, flush=True)

    on_batch = _progress(lambda: "training", args.no_progress)
    try:
        report = synthesize(config, out, resume=args.resume, on_round=on_round, on_batch=on_batch)
    except KeyboardInterrupt:
        print("\ninterrupted; the last finished round is saved. Resume with the same command and --resume.",
              file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}. Resume with --resume after lowering lr (a new --out).", file=sys.stderr)
        return 2
    print()
    print(_format_report(report))
    print(f"\nwrote {out}/report.json, history.json, model.npz, figures/")
    return 0


def _format_report(report):
    from .paper import comparison_table
    return comparison_table([(report["mode"] if report["mode"] != "nest" else "NeST", report)])


def cmd_report(args):
    from .paper import comparison_table
    runs = []
    for d in args.dirs:
        path = Path(d) / "report.json"
        if not path.exists():
            print(f"error: {path} not found (run nestref synthesize --out {d} first)", file=sys.stderr)
            return 2
        report = json.loads(path.read_text())
        runs.append((f"{'NeST' if report['mode'] == 'nest' else 'pruning only'} ({Path(d).name})", report))
    print(comparison_table(runs))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="nestref", description="NeST grow-and-prune synthesis, reference implementation")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a (dense or seed) LeNet on MNIST")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="lenet-300-100")
    p.add_argument("--epochs", type=int, help="default: the arch's recipe")
    p.add_argument("--lr", type=float, help="initial learning rate (default: the arch's recipe)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="cosine")
    p.add_argument("--width-scale", type=float, default=1.0)
    p.add_argument("--density", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-val", type=int, default=5000, help="validation images split from the training set")
    p.add_argument("--data-dir", help="directory with the MNIST IDX files (else $NESTREF_DATA_DIR, the cache, a download)")
    p.add_argument("--out", help="checkpoint path (default runs/<arch>/model.npz)")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.add_argument("--augment", action="store_true", help="random affine distortions of the training images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("synthesize", help="run NeST: seed -> grow -> prune -> compact")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES))
    p.add_argument("--preset", help="a named recipe (see nestref.config.PRESETS); default: the arch's")
    p.add_argument("--mode", choices=["nest", "prune-only"])
    p.add_argument("--config", help="TOML or JSON file of config values")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config value")
    p.add_argument("--data-dir")
    p.add_argument("--out", help="output directory (default runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("report", help="print the paper's table beside the runs in DIR...")
    p.add_argument("dirs", nargs="+")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (data.MNISTNotFoundError, data.IDXError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
