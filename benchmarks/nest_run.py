"""The wall time of one whole NeST run (the paper's recipe), phase by phase.

    python -m benchmarks.nest_run [--arch lenet-300-100|lenet5] [--out DIR] [--threads N] [--quick]

Runs ``nestref.run.synthesize.synthesize`` with the preset of ``--arch`` (README, "Results")
into a fresh directory and prints the total wall time, the time of
each phase (from the run's history: seed, growth, settle, pruning, fine-tuning), the
final test error and parameter count, and the load average before and after. Compare
the error and parameters with the study's rows of the same arch (README, "Results": mean
+- std over seeds) to see that a faster run still gives the same results within the
run-to-run noise. A whole run takes minutes (targets: <= 3
for LeNet-300-100, <= 10 for LeNet-5 on 2 cores); ``--quick`` is a seconds-long smoke
run (a few thousand images, one epoch per phase) that times nothing of interest.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from nestref.nest.config import make_config
from nestref.run.synthesize import synthesize

from .common import limited_blas, load_average, thread_counts

TARGET_MINUTES = {"lenet-300-100": 3.0, "lenet5": 10.0}
QUICK = dict(
    train_limit=2000,
    n_val=500,
    initial_epochs=1,
    growth_epochs=1,
    max_growth_rounds=1,
    growth_batches=2,
    settle_epochs=1,
    prune_epochs=1,
    max_prune_rounds=1,
    finetune_epochs=1,
    augment=False,
    patience=5,
    max_error_increase=1.0,
    prune_floor_params=100,
    batch_size=100,
)


def run(arch="lenet-300-100", out=None, threads=None, quick=False, data_dir=None):
    overrides = dict(QUICK) if quick else {}
    if data_dir:
        overrides["data_dir"] = data_dir
    config = make_config(preset=arch, overrides=overrides)
    with tempfile.TemporaryDirectory() as scratch, limited_blas(threads):
        out_dir = Path(out) if out else Path(scratch) / "run"
        load_before, start = load_average(), time.perf_counter()
        report = synthesize(config, out_dir)
        seconds = time.perf_counter() - start
        history = json.loads((out_dir / "history.json").read_text())
        threads_used = thread_counts()
    phases = {}
    for record in history:
        phase = record.get("phase", "?")
        phases[phase] = phases.get(phase, 0.0) + float(record.get("seconds", 0.0))
    return {
        "arch": arch,
        "quick": quick,
        "seconds": seconds,
        "phases": phases,
        **threads_used,
        "load_average": [load_before, load_average()],
        "test_error": report.get("test_error"),
        "params": report.get("params"),
        "target_minutes": TARGET_MINUTES[arch],
    }


def format_results(r):
    minutes = r["seconds"] / 60
    verdict = (
        ""
        if r["quick"]
        else (
            f" (target <= {r['target_minutes']:g} min: "
            f"{'met' if minutes <= r['target_minutes'] else 'NOT met'})"
        )
    )
    lines = [
        f"NeST {r['arch']}{' (quick smoke run)' if r['quick'] else ''}: "
        f"{minutes:.2f} min wall{verdict}, "
        f"{r['blas_threads']} BLAS thread(s), "
        f"load average {r['load_average'][0]} -> {r['load_average'][1]}",
        f"  test error {r['test_error']}, params {r['params']}",
    ]
    lines += [f"  {phase:<12} {seconds:8.1f} s" for phase, seconds in r["phases"].items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.nest_run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--arch", default="lenet-300-100", choices=sorted(TARGET_MINUTES))
    parser.add_argument("--out", help="keep the run here (default: a temporary directory)")
    parser.add_argument("--threads", type=int,
                        help="BLAS and Numba threads (default: as they are)")
    parser.add_argument(
        "--data-dir", help="MNIST directory (default: $NESTREF_DATA_DIR or the cache)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args(argv)
    print(format_results(run(args.arch, args.out, args.threads, args.quick, args.data_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
