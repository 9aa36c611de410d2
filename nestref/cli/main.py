"""The ``nestref`` command: train, synthesize, report, export, predict, conformance, study
(benchmarks: ``python -m benchmarks.NAME``).

Only the command modules talk to the screen (this one, and ``cli_study`` and
``cli_conformance``, which it hands ``nestref study`` and ``nestref conformance`` to): they
turn the callbacks of the loops into a progress bar and lines of text.

A user's mistake (an argument, a config, a file, the data) ends the command with one
line, ``error: <the problem and the fix>``, and no traceback; ``--debug`` shows the
traceback instead. Exit codes (README: "Commands"): 0 done; 1 a file, the data or the
run failed (e.g. missing MNIST, a corrupt checkpoint, training diverged); 2 the command
must change (a bad argument or config value, an output that would be overwritten);
130 interrupted (Ctrl-C; resume with ``--resume``).
"""
import argparse
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from ..checks import (
    check_fraction,
    check_int,
    check_number,
    check_positive_int,
    check_positive_number,
)
from ..core.augment import random_affine
from ..core.optim import SCHEDULES, SGD
from ..core.train import evaluate, fit, prepare_inputs
from ..data import datasets as data
from ..data.storage import (
    LOCK_SUFFIX,
    check_writable_dir,
    checkpoint_exists,
    hold_lock,
    load_arrays,
    previous_path,
)
from ..errors import (
    CheckpointError,
    ConfigError,
    InvalidArgumentError,
    NestrefError,
    OutputExistsError,
    OutputPathError,
    ReportError,
    TrainingDiverged,
    one_line,
)
from ..nest import architectures
from ..nest.networks import build
from ..run.checkpoint import resume_checkpoint, save_checkpoint
from ..run.run_files import RUN_MARKER

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Recipes for the dense baselines (`nestref train --arch NAME`; README: "Commands"), from the
# architecture table.
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


def train_default_out(arch):
    """train's default checkpoint, runs/train-<arch>/model.npz: apart from synthesize's default
    run directories (runs/<preset>, runs/<preset>-<mode>)."""
    return Path("runs") / f"train-{_run_name(arch)}" / "model.npz"


# what `train` fixes for the whole run (saved in the checkpoint, compared on --resume), and the
# defaults of those the recipe does not set; --lr, --epochs, --data-dir may change on resume
TRAIN_SETTINGS = {
    "arch": "lenet-300-100",
    "width_scale": 1.0,
    "density": 1.0,
    "seed": 0,
    "n_val": 5000,
    "batch_size": None,
    "weight_decay": None,
    "momentum": 0.9,
    "schedule": "cosine",
    "augment": False,
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


def _warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _check_train_args(args):
    """Every number of `train` checked before anything is read or trained (InvalidArgumentError)."""
    if args.epochs is not None:
        check_positive_int("--epochs", args.epochs)
    if args.lr is not None:
        check_positive_number("--lr", args.lr)
    if args.batch_size is not None:
        check_positive_int("--batch-size", args.batch_size)
    if args.weight_decay is not None:
        check_number("--weight-decay", args.weight_decay, minimum=0)
    if args.momentum is not None:
        check_fraction("--momentum", args.momentum, include_zero=True, include_one=False)
    if args.width_scale is not None:
        if check_positive_number("--width-scale", args.width_scale) > 10:
            raise InvalidArgumentError(
                f"--width-scale must be a number in (0, 10], got {args.width_scale!r}"
            )
    if args.density is not None:
        check_fraction("--density", args.density)
    if args.seed is not None:
        check_int("--seed", args.seed, minimum=0)
    if args.n_val is not None:
        check_positive_int("--n-val", args.n_val)


def _train_settings(args, saved=None):
    """The run's fixed settings: the command line's, else the checkpoint's (on resume), else the
    defaults.

    Refuses (ConfigError) a setting given on the command line that differs from the checkpoint's.
    """
    given = {name: getattr(args, name) for name in TRAIN_SETTINGS}
    given["augment"] = True if args.augment else None
    if saved is not None:
        differing = [
            (k, saved[k], v)
            for k, v in given.items()
            if v is not None and k in saved and saved[k] != v
        ]
        if differing:
            k, theirs, ours = differing[0]
            if k == "arch":
                raise ConfigError(f"{args.out_path} is a checkpoint of a {theirs} network, and "
                                  f"--arch asks for {ours}: drop --arch to continue the {theirs} "
                                  f"run, or train {ours} with another --out")
            flags = ", ".join(
                f"--{k.replace('_', '-')} ({theirs!r} in the checkpoint, {ours!r} given)"
                for k, theirs, ours in differing
            )
            raise ConfigError(f"{args.out_path} was trained with other settings: {flags}. On "
                              f"--resume only --lr, --epochs and --data-dir may change: drop the "
                              f"others, or start again with --overwrite")
        settings = {
            k: given[k] if given[k] is not None else saved.get(k, TRAIN_SETTINGS[k])
            for k in TRAIN_SETTINGS
        }
    else:
        settings = {k: v if v is not None else TRAIN_SETTINGS[k] for k, v in given.items()}
    recipe = architectures.get(settings["arch"]).recipe
    for k in ("batch_size", "weight_decay"):
        if settings[k] is None:
            settings[k] = recipe[k]
    return settings


def _is_nestref_checkpoint(path):
    try:
        return "spec" in load_arrays(path, error=CheckpointError)
    except (CheckpointError, OSError):
        return False


def _train_out_path(args):
    """train's --out, checked before anything is read: a checkpoint file in a writable directory."""
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: --resume continues --out, "
                          "--overwrite starts it again; pass one")
    # not runs/<arch>/: that is where `nestref synthesize` puts the run of the same arch
    settings_arch = args.arch or TRAIN_SETTINGS["arch"]
    out = Path(args.out or train_default_out(settings_arch))
    args.out_path = out
    if out.is_dir():
        raise OutputPathError(
            f"--out {out} is a directory; train's --out is the checkpoint file, "
            f"e.g. {out / 'model.npz'}"
        )
    if (out.parent / RUN_MARKER).is_file():
        # its model.npz and checkpoint are the synthesized run's; a dense checkpoint there
        # would replace them and leave its report.json describing another network
        raise OutputPathError(f"--out {out} lies in {out.parent}, the run directory of a `nestref "
                              f"synthesize` run, whose files train would replace: choose another "
                              f"--out, e.g. {train_default_out(settings_arch)}")
    check_writable_dir(out.parent, "--out's directory")
    return out


def _clear_or_refuse_checkpoint(out, overwrite):
    """A checkpoint at ``out`` and no --resume: removed with --overwrite, else OutputExistsError."""
    if not out.exists() or _is_nestref_checkpoint(out):
        if not overwrite:
            raise OutputExistsError(f"--out {out} holds a checkpoint: pass --resume to continue "
                                    f"training it, or --overwrite to start again")
        for path in (out, previous_path(out)):
            path.unlink(missing_ok=True)
    else:
        raise OutputExistsError(f"--out {out} exists and is not a nestref checkpoint; nestref will "
                                f"not replace it: choose another --out")


def _load_train_checkpoint(out):
    """(net, optimizer, state) of the `train` checkpoint at ``out``; CheckpointError if not one."""
    net, optimizer, saved_state, warning = resume_checkpoint(out)
    if warning:
        _warn(warning)
    if not (isinstance(saved_state.get("epoch"), int)
            and isinstance(saved_state.get("records"), list)
            and isinstance(saved_state.get("rng"), dict)
            and architectures.problem(saved_state.get("arch")) is None):
        raise CheckpointError(f"{out}: not a checkpoint of `nestref train` (its state lacks epoch, "
                              f"records, rng or arch); choose another --out")
    if optimizer is None:
        raise CheckpointError(
            f"{out}: holds no optimizer state; not a checkpoint of `nestref train`"
        )
    return net, optimizer, saved_state


def _starting_point(args, out):
    """(net, optimizer, state) of the checkpoint to resume, or (None, None, None) to start anew."""
    if checkpoint_exists(out) and not args.resume:
        _clear_or_refuse_checkpoint(out, args.overwrite)
    elif args.resume and checkpoint_exists(out):
        return _load_train_checkpoint(out)
    elif args.resume:
        _warn(f"--resume: no checkpoint at {out} yet; starting from scratch")
    return None, None, None


def _restore_progress(out, saved_state, rng, epochs):
    """(start_epoch, records) of a resumed run; ``rng`` set to the checkpoint's state."""
    start_epoch, records = saved_state["epoch"], saved_state["records"]
    try:
        rng.bit_generator.state = saved_state["rng"]
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{out}: state field 'rng' is not a random generator state ({err})"
        ) from err
    if start_epoch < epochs:
        print(f"resuming {out} at epoch {start_epoch + 1}/{epochs}")
    return start_epoch, records


def _new_network(settings, splits, lr):
    """(net, optimizer) of a fresh run, built from its settings for the data's shape."""
    net = build(
        settings["arch"],
        width_scale=settings["width_scale"],
        density=settings["density"],
        seed=settings["seed"],
        image_shape=splits["image_shape"],
        classes=splits["classes"],
    )
    optimizer = SGD(
        net, lr=lr, momentum=settings["momentum"], weight_decay=settings["weight_decay"]
    )
    return net, optimizer


def _print_train_header(net, splits, settings, epochs, lr):
    train, val, test = splits["train"], splits["val"], splits["test"]
    print(f"{net.name}: data {splits['dataset']['name']} from {splits['source']} "
          f"(sha256 {splits['dataset']['checksum'][:16]}); {len(train[0])} train / "
          f"{len(val[0])} validation / {len(test[0])} test images; epochs={epochs} lr={lr} "
          f"batch={settings['batch_size']} schedule={settings['schedule']} "
          f"weight_decay={settings['weight_decay']} augment={settings['augment']}")


def _xy(split, net):
    """A split's (images, labels) with the images as the network takes them."""
    return prepare_inputs(split[0], net), split[1]


def _checkpoint_each_epoch(out, net, optimizer, settings, splits, rng, records, epochs, current):
    """The on_epoch callback: record the epoch, save the checkpoint, print one line."""
    def on_epoch(record):
        records.append(record)
        current["epoch"] = record["epoch"]
        save_checkpoint(
            out,
            net,
            optimizer,
            {
                "epoch": record["epoch"],
                "records": records,
                "rng": rng.bit_generator.state,
                "arch": settings["arch"],
                "settings": settings,
                "data": splits["dataset"],
            },
        )
        print(f"epoch {record['epoch']:3d}/{epochs}  lr {record['lr']:.4g}  "
              f"train loss {record['train_loss']:.4f}  "
              f"val error {100 * record['val_error']:.2f}%  ({record['seconds']:.1f} s)",
              flush=True)
    return on_epoch


def _fit_epochs(args, out, net, optimizer, settings, splits, rng, start_epoch, records, epochs,
                lr):
    """Train from ``start_epoch`` to ``epochs``, a checkpoint per epoch; EXIT_INTERRUPTED on ^C."""
    current = {"epoch": start_epoch}
    on_epoch = _checkpoint_each_epoch(out, net, optimizer, settings, splits, rng, records, epochs,
                                      current)
    on_batch = _progress(lambda: f"epoch {current['epoch'] + 1}/{epochs}", args.no_progress)
    schedule = SCHEDULES[settings["schedule"]](lr)
    if start_epoch >= epochs:
        print(f"{out} has already trained {start_epoch} epochs (--epochs {epochs}): nothing to "
              f"train; pass a larger --epochs to train on")
    try:
        fit(
            net,
            optimizer,
            _xy(splits["train"], net),
            _xy(splits["val"], net),
            epochs,
            schedule,
            settings["batch_size"],
            rng,
            start_epoch,
            on_epoch=on_epoch,
            on_batch=on_batch,
            augment=random_affine if settings["augment"] else None,
        )
    except TrainingDiverged as err:
        saved = (f"the last good checkpoint is {out} (epoch {current['epoch']}); rerun the same "
                 f"command with --resume --lr {lr / 2:g} (the learning rate may change on resume)"
                 if out.exists() else
                 f"no epoch finished, so nothing was saved; rerun with --lr {lr / 2:g}")
        raise TrainingDiverged(f"training diverged: {err}. {saved}") from err
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; resume with the same command and --resume (checkpoint: {out})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return None


def cmd_train(args):
    _check_train_args(args)
    out = _train_out_path(args)
    # one writer per checkpoint: a second `train` with the same --out is refused while this runs
    with hold_lock(out.with_name(out.name + LOCK_SUFFIX), f"--out {out}"):
        return _train(args, out)


def _train(args, out):
    """`nestref train` once this process holds the lock of its --out."""
    net, optimizer, saved_state = _starting_point(args, out)
    saved_settings = (
        None
        if saved_state is None
        else {**saved_state.get("settings", {}), "arch": saved_state["arch"]}
    )
    settings = _train_settings(args, saved_settings)
    recipe = architectures.get(settings["arch"]).recipe
    epochs = args.epochs if args.epochs is not None else recipe["epochs"]
    lr = args.lr if args.lr is not None else recipe["lr"]

    splits = data.load_splits(args.data_dir, settings["n_val"], settings["seed"])
    start_epoch, rng, records = 0, np.random.default_rng(settings["seed"]), []
    if saved_state is not None:
        start_epoch, records = _restore_progress(out, saved_state, rng, epochs)
    else:
        net, optimizer = _new_network(settings, splits, lr)
    _print_train_header(net, splits, settings, epochs, lr)

    interrupted = _fit_epochs(args, out, net, optimizer, settings, splits, rng, start_epoch,
                              records, epochs, lr)
    if interrupted is not None:
        return interrupted
    v = evaluate(net, *_xy(splits["val"], net))
    t = evaluate(net, *_xy(splits["test"], net))
    seconds = sum(r["seconds"] for r in records)
    print(f"done: validation error {100 * v['error']:.2f}%  test error {100 * t['error']:.2f}%  "
          f"({seconds:.0f} s of training, {seconds / max(1, len(records)):.1f} s/epoch); "
          f"model: {out}")
    return EXIT_OK


def cmd_synthesize(args):
    from ..nest.config import SynthesisConfig, make_config, parse_override
    from ..run.run_files import CHECKPOINT
    from ..run.synthesize import synthesize
    overrides = dict(parse_override(item) for item in args.set)
    # with neither --arch nor --config, the run is the default arch's and so is its recipe
    # (a config file without --arch is the whole recipe)
    arch = args.arch or overrides.get("arch") or (None if args.config else SynthesisConfig.arch)
    preset = args.preset or (architectures.default_preset(arch) if arch else None)
    flags = {"arch": args.arch, "mode": args.mode, "data_dir": args.data_dir}
    flags = {key: value for key, value in flags.items() if value}
    if args.quick:  # the arch's smoke-test budget; --set and --config still win
        overrides = {**architectures.get(arch or SynthesisConfig.arch).quick, **overrides}
    overrides.update(flags)
    config = make_config(preset, args.config, overrides,
                         {key: "--" + key.replace("_", "-") for key in flags})
    out = Path(args.out or f"runs/{_run_name(preset or config.arch)}"
                           f"{'' if config.mode == 'nest' else '-' + config.mode}"
                           f"{'-quick' if args.quick else ''}")
    print(f"nestref synthesize: {config.arch}, mode {config.mode}, "
          f"preset {preset or 'none'}{f' (config {args.config})' if args.config else ''}, "
          f"output {out}")

    def on_round(rec):
        line = (f"{rec['phase']:>8} {rec['round']:3d}  params {rec['params']:8d}  "
                f"FLOPs {rec['flops']:9d}  widths {rec['widths']}  "
                f"val error {100 * rec['val_error']:.2f}%  ({rec['seconds']:.1f} s)")
        print(line, flush=True)

    on_batch = _progress(lambda: "training", args.no_progress)
    if args.resume and not checkpoint_exists(out / CHECKPOINT):
        _warn(f"--resume: no checkpoint in {out} yet; starting from the beginning")
    try:
        report = synthesize(config, out, resume=args.resume, on_round=on_round, on_batch=on_batch,
                            overwrite=args.overwrite, on_warning=_warn)
    except KeyboardInterrupt:
        print(
            "\ninterrupted; the last finished round is saved. "
            "Resume with the same command and --resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print()
    print(_format_report(report))
    print(
        f"\ndata: {report['data']['name']} from {report['data']['source']} "
        f"(sha256 {report['data']['checksum']})"
    )
    print(f"wrote {out}/report.json, history.json, model.npz, selections/, figures/")
    return EXIT_OK


def _format_report(report):
    """The paper's table beside this run and the study's mean of the same recipe, with a line
    that says the run is one seed."""
    from ..tools.paper import comparison_table
    from ..tools.study import committed_rows_file, read_rows, study_mean_for
    label = f"{_method_label(report)} [{report.get('selection')}]"
    rows_file, mean, note = committed_rows_file(), None, ""
    try:
        mean = study_mean_for(report, read_rows(rows_file)) if rows_file else None
    except ReportError as err:
        note = f"\n(the study's rows could not be read: {err})"
    means = [] if mean is None else [(f"{label}, mean of {len(mean['seeds'])} seeds", mean,
                                      report)]
    table = comparison_table([(f"{label}, seed {report['seed']}", report)], means)
    if mean is not None:
        seeds = ", ".join(map(str, mean["seeds"]))
        note = (f"\nThe run above is one seed, one draw. The study row is the mean +- std over "
                f"seeds {seeds} of the same recipe ({rows_file}); see the README's study "
                f"section for which commit made its rows.")
    return table + note


def _method_label(report):
    return {"nest": "NeST", "prune-only": "pruning only", "dense": "dense"}.get(
        report["mode"], report["mode"]
    )


def cmd_report(args):
    from ..run.synthesize import read_report
    from ..tools.paper import comparison_table
    runs = []
    for d in args.dirs:
        report = read_report(Path(d) / "report.json")
        selection = f" [{report['selection']}]" if "selection" in report else ""
        runs.append((f"{_method_label(report)} ({Path(d).name}){selection}", report))
    print(comparison_table(runs))
    return EXIT_OK


def cmd_export(args):
    from ..run.export import export_onnx
    written = export_onnx(args.run, args.onnx, overwrite=args.overwrite,
                          unfinished=args.unfinished)
    print(f"wrote {written}")
    return 0


def cmd_predict(args):
    from ..run.export import predict_classes
    classes = predict_classes(args.run, args.images, unfinished=args.unfinished)
    print("\n".join(str(c) for c in classes))
    return 0


ARCH_HELP_SPECS = "or a spec: mlp:784-300-100-10, conv:c20k5-p2-c50k5-p2-d500-d10"
DATA_HELP = ("a directory in MNIST's IDX layout or an .npz with x_train, y_train, x_test, y_test "
             "(default: $NESTREF_DATA_DIR, the repository's data/mnist, the cache, a download)")


UNFINISHED_HELP = ("take the network of a run that has not finished (stopped during growth, "
                   "say) as it is; without it such a run is refused")


def _arch_help():
    return f"{', '.join(architectures.names())}, {ARCH_HELP_SPECS}"


def _add_train_parser(sub, common):
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a (dense or seed) network on MNIST or another data set",
    )
    p.add_argument("--arch", type=_arch_argument,
                   help=_arch_help() + " (default: lenet-300-100; on --resume: the checkpoint's)")
    p.add_argument(
        "--epochs",
        type=int,
        help="total epochs (default: the arch's recipe); may change on --resume",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="initial learning rate (default: the arch's recipe); may change on --resume",
    )
    p.add_argument("--momentum", type=float, help="default 0.9")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--schedule", choices=sorted(SCHEDULES), help="default: cosine")
    p.add_argument("--width-scale", type=float, help="default 1.0")
    p.add_argument("--density", type=float, help="default 1.0")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument(
        "--n-val", type=int, help="validation images split from the training set (default 5000)"
    )
    p.add_argument("--data-dir", help=DATA_HELP)
    p.add_argument("--out", help="checkpoint path (default runs/train-<arch>/model.npz)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint at --out and start again"
    )
    p.add_argument(
        "--augment", action="store_true", help="random affine distortions of the training images"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_synthesize_parser(sub, common):
    p = sub.add_parser(
        "synthesize", parents=[common], help="run NeST: seed -> grow -> prune -> compact"
    )
    p.add_argument("--arch", type=_arch_argument, help=_arch_help())
    p.add_argument(
        "--preset", help="a named recipe (see nestref.nest.config.PRESETS); default: the arch's"
    )
    p.add_argument("--mode", choices=["nest", "prune-only", "dense"])
    p.add_argument("--config", help="TOML or JSON file of config values")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one config value"
    )
    p.add_argument("--data-dir", help=DATA_HELP)
    p.add_argument("--out", help="output directory (default runs/<preset>, "
                                  "runs/<preset>-<mode> for another --mode than nest)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (learning rates, "
                        "data_dir and the epochs of phases not yet started may change)")
    p.add_argument("--overwrite", action="store_true",
                   help="start the run in --out again, removing only nestref's own files there")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test of a minute or two on the arch's tiny budget (its numbers "
                        "mean nothing; default --out runs/<preset>-quick)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synthesize)


def _add_run_parsers(sub, common):
    """The commands that read finished runs: report, export, predict."""
    p = sub.add_parser(
        "report", parents=[common], help="print the paper's table beside the runs in DIR..."
    )
    p.add_argument("dirs", nargs="+")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export",
        parents=[common],
        help="write a synthesized network as ONNX (needs the onnx extra)",
    )
    p.add_argument("run", help="a run directory of nestref synthesize")
    p.add_argument("--onnx", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    p.add_argument("--unfinished", action="store_true", help=UNFINISHED_HELP)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "predict",
        parents=[common],
        help="print the class of each image in IMAGES.npy, one per line",
    )
    p.add_argument("run", help="a run directory of nestref synthesize")
    p.add_argument(
        "images", help=".npy of images (N, H, W) or (N, C, H, W): uint8 0-255 or floats in [0, 1]"
    )
    p.add_argument("--unfinished", action="store_true", help=UNFINISHED_HELP)
    p.set_defaults(func=cmd_predict)


def _add_handed_over_parsers(sub):
    """Listed for --help only: main hands these commands to their modules before parsing."""
    # `nestref conformance ...` is handed to nestref.cli.conformance (see main)
    sub.add_parser(
        "conformance",
        help="write or check the conformance cases for ports (see conformance/README.md)",
    )
    # `nestref study ...` is handed to nestref.cli.study the same way
    sub.add_parser(
        "study",
        help="NeST vs pruning only vs dense over seeds: run the grid, make the table "
             "(docs/study.md)",
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nestref", description="NeST grow-and-prune synthesis, reference implementation",
        epilog="exit codes: 0 done, 1 a file, the data or the run failed, 2 bad usage "
               "(fix the command), 130 interrupted (resume with --resume)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    # --debug is also accepted after the command name; SUPPRESS keeps it from resetting the
    # flag above
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub, common)
    _add_synthesize_parser(sub, common)
    _add_run_parsers(sub, common)
    _add_handed_over_parsers(sub)
    return parser


def main(argv=None):
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that went away shows here, not in Python's exit
        return code
    except BrokenPipeError:
        # the reader stopped reading (`nestref predict RUN x.npy | head`): it has what it wanted,
        # so this is no error; the rest of the output goes nowhere, quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file (a test captures it)
            pass
        return EXIT_OK


def _main(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["conformance"]:
        from .conformance import main as conformance_main
        return conformance_main(argv[1:])
    if argv[:1] == ["study"]:
        from .study import main as study_main
        return study_main(argv[1:])
    args = build_parser().parse_args(argv)  # bad usage: argparse prints it and exits with 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # main's: no error
    except MemoryError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: out of memory ({err or 'MemoryError'}): the network or the data is larger "
              f"than this machine holds; choose smaller layer sizes (--arch) or fewer images "
              f"(--set train_limit=N)", file=sys.stderr)
        return EXIT_FAILED
    except (NestrefError, data.IDXError, data.MNISTNotFoundError, OSError, ValueError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        user_error = isinstance(err, NestrefError | data.IDXError | data.MNISTNotFoundError)
        if not args.debug and not user_error:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
