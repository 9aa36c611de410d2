"""The ``nestref`` command: train, synthesize, report, bench.

Only this module talks to the screen: it turns the callbacks of the loops into a
progress bar and lines of text.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import architectures, data, errors
from .augment import random_affine
from .models import build
from .optim import SCHEDULES, SGD
from .train import TrainingDiverged, evaluate, fit, load_checkpoint, prepare_inputs, save_checkpoint

# Recipes for the dense baselines (README: "Dense baselines"), from the architecture table.
TRAIN_RECIPES = {name: entry.recipe for name, entry in architectures.TABLE.items()}


def _arch_argument(text):
    """argparse type of --arch: a named architecture or an mlp:/conv: spec."""
    problem = architectures.problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _run_name(name):
    """A directory name for a preset or arch (a spec's ':' is not welcome in every file system)."""
    return name.replace(":", "_")


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


def cmd_train(args):
    recipe = architectures.get(args.arch).recipe
    epochs = args.epochs if args.epochs is not None else recipe["epochs"]
    lr = args.lr if args.lr is not None else recipe["lr"]
    batch_size = args.batch_size or recipe["batch_size"]
    weight_decay = args.weight_decay if args.weight_decay is not None else recipe["weight_decay"]
    out = Path(args.out or f"runs/{_run_name(args.arch)}/model.npz")

    splits = data.load_splits(args.data_dir, args.n_val, args.seed)
    train, val, test, source = splits["train"], splits["val"], splits["test"], splits["source"]
    start_epoch, rng, records = 0, np.random.default_rng(args.seed), []
    if args.resume and out.exists():
        net, optimizer, state = load_checkpoint(out)
        start_epoch, records = state["epoch"], state["records"]
        rng.bit_generator.state = state["rng"]
        print(f"resuming {out} at epoch {start_epoch + 1}/{epochs}")
    else:
        net = build(args.arch, width_scale=args.width_scale, density=args.density, seed=args.seed,
                    image_shape=splits["image_shape"], classes=splits["classes"])
        optimizer = SGD(net, lr=lr, momentum=args.momentum, weight_decay=weight_decay)
    print(f"{net.name}: data {splits['dataset']['name']} from {source} "
          f"(sha256 {splits['dataset']['checksum'][:16]}); {len(train[0])} train / {len(val[0])} validation / "
          f"{len(test[0])} test images; epochs={epochs} lr={lr} batch={batch_size} "
          f"schedule={args.schedule} weight_decay={weight_decay} augment={args.augment}")

    to_xy = lambda split: (prepare_inputs(split[0], net), split[1])  # noqa: E731
    current = {"epoch": start_epoch}

    def on_epoch(record):
        records.append(record)
        current["epoch"] = record["epoch"]
        save_checkpoint(out, net, optimizer, {"epoch": record["epoch"], "records": records,
                                             "rng": rng.bit_generator.state, "arch": args.arch,
                                             "data": splits["dataset"]})
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
    from .config import make_config, parse_override
    from .synthesize import synthesize
    preset = args.preset or (architectures.default_preset(args.arch) if args.arch else None)
    overrides = dict(parse_override(item) for item in args.set)
    if args.arch:
        overrides["arch"] = args.arch
    if args.mode:
        overrides["mode"] = args.mode
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    config = make_config(preset, args.config, overrides)
    out = Path(args.out or f"runs/{_run_name(preset or config.arch)}"
                           f"{'' if config.mode == 'nest' else '-' + config.mode}")
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
    print(f"\ndata: {report['data']['name']} from {report['data']['source']} (sha256 {report['data']['checksum']})")
    print(f"wrote {out}/report.json, history.json, model.npz, figures/")
    return 0


def _format_report(report):
    from .paper import comparison_table
    return comparison_table([(f"{_method_label(report)} [{report.get('selection')}]", report)])


def _method_label(report):
    return {"nest": "NeST", "prune-only": "pruning only", "dense": "dense"}.get(report["mode"], report["mode"])


def cmd_report(args):
    from .paper import comparison_table
    runs = []
    for d in args.dirs:
        path = Path(d) / "report.json"
        if not path.exists():
            print(f"error: {path} not found (run nestref synthesize --out {d} first)", file=sys.stderr)
            return 2
        report = json.loads(path.read_text())
        selection = f" [{report['selection']}]" if "selection" in report else ""
        runs.append((f"{_method_label(report)} ({Path(d).name}){selection}", report))
    print(comparison_table(runs))
    return 0


def cmd_export(args):
    from .export import export_onnx
    print(f"wrote {export_onnx(args.run, args.onnx)}")
    return 0


def cmd_predict(args):
    from .export import predict_classes
    print("\n".join(str(c) for c in predict_classes(args.run, args.images)))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="nestref", description="NeST grow-and-prune synthesis, reference implementation")
    sub = parser.add_subparsers(dest="command", required=True)

    arch_help = f"{', '.join(architectures.names())}, or a spec: mlp:784-300-100-10, conv:c20k5-p2-c50k5-p2-d500-d10"
    data_help = ("a directory in MNIST's IDX layout or an .npz with x_train, y_train, x_test, y_test "
                 "(default: $NESTREF_DATA_DIR, the repository's data/mnist, the cache, a download)")
    p = sub.add_parser("train", help="train a (dense or seed) network on MNIST or another data set")
    p.add_argument("--arch", type=_arch_argument, default="lenet-300-100", help=arch_help)
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
    p.add_argument("--data-dir", help=data_help)
    p.add_argument("--out", help="checkpoint path (default runs/<arch>/model.npz)")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.add_argument("--augment", action="store_true", help="random affine distortions of the training images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("synthesize", help="run NeST: seed -> grow -> prune -> compact")
    p.add_argument("--arch", type=_arch_argument, help=arch_help)
    p.add_argument("--preset", help="a named recipe (see nestref.config.PRESETS); default: the arch's")
    p.add_argument("--mode", choices=["nest", "prune-only", "dense"])
    p.add_argument("--config", help="TOML or JSON file of config values")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config value")
    p.add_argument("--data-dir", help=data_help)
    p.add_argument("--out", help="output directory (default runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("report", help="print the paper's table beside the runs in DIR...")
    p.add_argument("dirs", nargs="+")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a synthesized network as ONNX (needs the onnx extra)")
    p.add_argument("run", help="a run directory of nestref synthesize")
    p.add_argument("--onnx", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="print the class of each image in IMAGES.npy, one per line")
    p.add_argument("run", help="a run directory of nestref synthesize")
    p.add_argument("images", help=".npy of images (N, H, W) or (N, C, H, W): uint8 0-255 or floats in [0, 1]")
    p.set_defaults(func=cmd_predict)

    # `nestref bench ...` is handed to nestref.bench before parsing (see main); listed here for --help
    sub.add_parser("bench", help="time training against PyTorch (nestref bench --help for its options)")
    # `nestref conformance ...` is handed to nestref.conformance the same way
    sub.add_parser("conformance", help="write or check the conformance cases for ports (see conformance/README.md)")
    # `nestref study ...` is handed to nestref.study the same way
    sub.add_parser("study", help="NeST vs pruning only vs dense over seeds: run the grid, make the table (docs/study.md)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main
        return bench_main(argv[1:])
    if argv[:1] == ["conformance"]:
        from .conformance import main as conformance_main
        return conformance_main(argv[1:])
    if argv[:1] == ["study"]:
        from .study import main as study_main
        return study_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (data.MNISTNotFoundError, data.IDXError, ValueError, errors.NestrefError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
