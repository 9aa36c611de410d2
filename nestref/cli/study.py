"""``nestref study run`` and ``nestref study table``: the study's command
(``nestref.cli.main`` hands ``nestref study ...`` over to ``main`` here). The grid, its rows
and its table are ``nestref.tools.study``'s; this module only parses, prints and turns errors
into one line.
"""
import argparse
import sys
import traceback
from pathlib import Path

from ..checks import check_int, check_positive_int
from ..data.storage import check_writable_dir
from ..errors import InvalidArgumentError, NestrefError, OutputPathError, ReportError, one_line
from ..nest import architectures
from ..nest.config import parse_override
from ..run.plots import frontier_figure
from ..tools.study import (
    BACKENDS,
    DEFAULT_FIGURE,
    DEFAULT_ROWS,
    DEFAULT_RUNS,
    METHODS,
    QUICK_RUNS,
    check_outputs,
    default_rows,
    format_table,
    read_readme,
    read_rows,
    rewrite_readme,
    run_grid,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nestref study", description="the grid arch x method x seed, and its table"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    # --debug after the command name too, as the other commands take it (nestref.cli.main)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run", parents=[common],
        help="run (or resume) every cell of the grid; rows go to --rows as cells finish"
    )
    p.add_argument("--arch", nargs="+",
                   help="the architectures (default: lenet-300-100 lenet5; with --quick: "
                        "lenet-300-100)")
    p.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells at once, each in a process of its own on one BLAS thread (with --backend "
             "dask and no --scheduler: the local cluster's worker processes)",
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
        help=f"where the cells' run directories go ({DEFAULT_RUNS}; with --quick {QUICK_RUNS})",
    )
    p.add_argument("--rows", help=f"the rows file (default: runs.json in --runs-dir; the committed "
                                  f"rows are written only when named: --rows {DEFAULT_ROWS})")
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
    p = sub.add_parser("table", parents=[common],
                       help="the table (and the frontier figure) from the rows file alone")
    p.add_argument("--rows", default=str(DEFAULT_ROWS), help=f"the rows file ({DEFAULT_ROWS})")
    p.add_argument("--readme", help="also rewrite the study table block of this README")
    p.add_argument("--block", help="the README block to rewrite, by name (default: the study's "
                                   "own; e.g. 'flops' for a variant's rows file)")
    p.add_argument(
        "--figure", default=str(DEFAULT_FIGURE),
        help=f"where the frontier figure goes ({DEFAULT_FIGURE}; the committed one is written "
             f"only when named: --figure figures/study/frontier.png)"
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
                          f"study run` writes (default {default_rows(DEFAULT_RUNS)}; the "
                          f"committed study's: {DEFAULT_ROWS})")
    rows = read_rows(args.rows)
    # everything the command will write is checked before anything is written
    readme = read_readme(args.readme, args.block) if args.readme else None
    if not args.no_figure:
        if Path(args.figure).is_dir():
            raise OutputPathError(f"--figure {args.figure} is a directory; --figure is the .png "
                                  f"to write, e.g. {Path(args.figure) / 'frontier.png'}")
        check_writable_dir(Path(args.figure).parent, "--figure's directory")
    table = format_table(rows)
    print(table)
    if args.readme:
        rewrite_readme(args.readme, table, args.block, text=readme)
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
    if args.arch is None:  # a smoke test is one arch's: each arch has its own tiny budget
        args.arch = ["lenet-300-100"] if args.quick else ["lenet-300-100", "lenet5"]
    if args.quick:
        if len(args.arch) != 1:
            raise InvalidArgumentError(
                "--quick takes one --arch (each arch has its own tiny budget)"
            )
        overrides = {**architectures.get(args.arch[0]).quick, **overrides}
    # the arguments, then the outputs, all before any cell trains
    check_positive_int("--jobs", args.jobs)
    for seed in args.seed:
        check_int("--seed", seed, minimum=0)
    for arch in args.arch:
        if architectures.problem(arch) is not None:
            raise InvalidArgumentError(f"--arch {arch}: {architectures.problem(arch)}")
    args.runs_dir = args.runs_dir or str(QUICK_RUNS if args.quick else DEFAULT_RUNS)
    args.rows = args.rows or str(default_rows(args.runs_dir))
    check_outputs(args.runs_dir, args.rows)
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
    print(f"the table of these rows: nestref study table --rows {args.rows}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)  # bad usage: argparse prints it and exits with 2
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
    except BrokenPipeError:
        raise  # the reader stopped reading (`| head`): nestref.cli.main.main ends quietly
    except (NestrefError, ValueError, OSError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        if not args.debug and not isinstance(err, NestrefError):
            print("(run with --debug for the traceback)", file=sys.stderr)
        return getattr(err, "exit_code", 1)  # 1: a file failed; 2: the command must change
