"""``nestref study run`` and ``nestref study table``: the study's command (``nestref.cli`` hands
``nestref study ...`` over to ``main`` here). The grid, its rows and its table are
``nestref.study``'s; this module only parses, prints and turns errors into one line.
"""
import argparse
import sys
from pathlib import Path

from . import architectures
from .config import parse_override
from .errors import InvalidArgumentError, NestrefError, ReportError
from .plots import frontier_figure
from .study import (
    BACKENDS,
    DEFAULT_ROWS,
    DEFAULT_RUNS,
    METHODS,
    format_table,
    read_rows,
    rewrite_readme,
    run_grid,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nestref study", description="the grid arch x method x seed, and its table"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run", help="run (or resume) every cell of the grid; rows go to --rows as cells finish"
    )
    p.add_argument("--arch", nargs="+", default=["lenet-300-100", "lenet5"])
    p.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes at once; each gets cores // jobs BLAS threads (with --backend dask and "
             "no --scheduler: the local cluster's worker processes, one BLAS thread each)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="where the cells run: 'local' processes on this machine (default), or 'dask': a "
             "Dask cluster's workers (needs pip install -e \".[cluster]\"; docs/study.md)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --backend dask: the scheduler of a running cluster (tcp://HOST:8786); "
             "without it, a local cluster of --jobs processes",
    )
    p.add_argument(
        "--runs-dir",
        default=str(DEFAULT_RUNS),
        help=f"where the cells' run directories go ({DEFAULT_RUNS})",
    )
    p.add_argument("--rows", default=str(DEFAULT_ROWS), help=f"the rows file ({DEFAULT_ROWS})")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value in every cell",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the arch's tiny smoke-test budget (minutes, not hours)",
    )
    p.add_argument("--data-dir", help="the data set (default: as nestref synthesize finds it)")
    p = sub.add_parser("table", help="the table (and the frontier figure) from the rows file alone")
    p.add_argument("--rows", default=str(DEFAULT_ROWS))
    p.add_argument("--readme", help="also rewrite the study table block of this README")
    p.add_argument("--block", help="the README block to rewrite, by name (default: the study's "
                                   "own; e.g. 'flops' for a variant's rows file)")
    p.add_argument(
        "--figure", default="figures/study/frontier.png", help="where the frontier figure goes"
    )
    p.add_argument("--no-figure", action="store_true")
    return parser


def _print_cell(arch, method, seed, status, rows):
    """run_grid's on_cell for the command: one line per finished cell."""
    shown = ", ".join(
        f"{r['selection']} {100 * r['test_error']:.2f}% @ {r['params']}" for r in rows
    )
    epochs = (f"{rows[0]['epochs_total']} epochs" if method == "dense"  # nothing is pruned
              else f"{rows[0]['epochs_before_pruning']} epochs before pruning")
    print(f"{arch} {method} seed {seed}: {status}; {shown} "
          f"({rows[0]['wall_seconds']:.0f} s, {epochs})", flush=True)


def _table_command(args):
    """`nestref study table`: print the table, optionally into a README and a figure."""
    if not Path(args.rows).exists():
        raise ReportError(f"--rows {args.rows}: no such file; give the rows file that `nestref "
                          f"study run` writes (default {DEFAULT_ROWS})")
    rows = read_rows(args.rows)
    table = format_table(rows)
    print(table)
    if args.readme:
        rewrite_readme(args.readme, table, args.block)
        print(f"\nrewrote the study table{' ' + args.block if args.block else ''} of "
              f"{args.readme}")
    if rows and not args.no_figure:
        frontier_figure(rows, args.figure)
        print(f"wrote {args.figure}")
    return 0


def _run_command(args):
    """`nestref study run`: every cell of the grid, with the command's overrides."""
    overrides = dict(parse_override(item) for item in args.set)
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.quick:
        if len(args.arch) != 1:
            raise InvalidArgumentError(
                "--quick takes one --arch (each arch has its own tiny budget)"
            )
        overrides = {**architectures.get(args.arch[0]).quick, **overrides}
    print(f"nestref study: {args.arch} x {args.method} x seeds {args.seed}, "
          f"{args.jobs} job(s); runs in {args.runs_dir}, rows to {args.rows}", flush=True)
    if args.backend == "dask":
        print("cells run on " + (f"the Dask cluster at {args.scheduler}" if args.scheduler else
                                 f"a local Dask cluster of {args.jobs} worker process(es)"),
              flush=True)
    run_grid(
        args.arch,
        args.method,
        args.seed,
        args.runs_dir,
        args.rows,
        overrides,
        args.jobs,
        args.backend,
        _print_cell,
        scheduler=args.scheduler,
    )
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "table":
            return _table_command(args)
        return _run_command(args)
    except KeyboardInterrupt:
        print(
            "\ninterrupted; finished cells are in the rows file, "
            "the others resume with the same command",
            file=sys.stderr,
        )
        return 130
    except (ValueError, NestrefError) as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # 1: a file failed; 2: the command must change
