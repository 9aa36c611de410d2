"""One answer per seed: a short synthesis that reaches the sparse and partial-area paths gives
the same bits on 1, 2 and 4 BLAS threads, and with the kernels compiled for a generic CPU or
for this one."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from nestref.core import reproducible
from nestref.nest.config import SynthesisConfig
from nestref.run.synthesize import synthesize

# Both start sparse (density 0.1) and are pruned below every sparse threshold, with
# augmentation on; LeNet-5's convolutions also lose areas. Their pruned layers' densities
# (LeNet-300-100: 0.05-0.08, LeNet-5: 0.05-0.09) are below SPARSE_BELOW and CONV_SPARSE_BELOW.
SHORT = dict(density=0.1, train_limit=1000, n_val=200, initial_epochs=1, growth_epochs=1,
             max_growth_rounds=1, patience=5, growth_batch_size=250, growth_batches=2,
             prune_epochs=1, max_prune_rounds=3, finetune_epochs=1, settle_epochs=1,
             max_error_increase=1.0, prune_floor_params=100, batch_size=64, augment=True)
MLP = dict(SHORT, arch="lenet-300-100", width_scale=0.4, prune_fractions=[0.4, 0.4, 0.1])
CONV = dict(SHORT, arch="lenet5", width_scale=0.3, train_limit=600, lr=0.02, prune_lr=0.01,
            growth_batch_size=200, growth_batches=1, batch_size=50,
            prune_fractions=[0.3, 0.3, 0.3, 0.1], area_fraction=0.3)
CLOCKS = {"seconds", "elapsed", "wall_seconds"}  # wall-clock times: allowed to differ


def without(value, names=CLOCKS):
    """value (JSON) with every field called one of ``names`` left out, at any depth."""
    if isinstance(value, dict):
        return {k: without(v, names) for k, v in value.items() if k not in names}
    if isinstance(value, list):
        return [without(v, names) for v in value]
    return value


def run_contents(out, ignore=CLOCKS):
    """Every array of every .npz a run wrote, and its history and report, the fields named in
    ``ignore`` left out."""
    arrays = {}
    for path in sorted(out.rglob("*.npz")):
        with np.load(path, allow_pickle=False) as saved:
            for key in saved.files:
                if key == "manifest":  # digests of the arrays below, the state's clocks included
                    continue
                value = saved[key]
                if key == "state":  # the checkpoint's JSON state holds the clocks too
                    value = without(json.loads(str(value)), ignore)
                arrays[f"{path.relative_to(out)}:{key}"] = value
    texts = {name: without(json.loads((out / name).read_text()), ignore)
             for name in ("history.json", "report.json")}
    return arrays, texts


def differences(a, b, ignore=CLOCKS):
    """The names of the arrays and files in which two runs differ."""
    (arrays_a, texts_a), (arrays_b, texts_b) = run_contents(a, ignore), run_contents(b, ignore)
    assert sorted(arrays_a) == sorted(arrays_b)
    found = [k for k in arrays_a if not (
        np.array_equal(arrays_a[k], arrays_b[k]) if isinstance(arrays_a[k], np.ndarray)
        else arrays_a[k] == arrays_b[k])]
    return found + [k for k in texts_a if texts_a[k] != texts_b[k]]


def blas_can_use(threads):
    return any(lib["user_api"] == "blas" for lib in threadpool_info()) and os.cpu_count() >= 2


def synthesize_under(settings, mnist_dir, out, threads):
    with threadpool_limits(limits=threads):  # as a user's OPENBLAS_NUM_THREADS would
        return synthesize(SynthesisConfig(data_dir=str(mnist_dir), **settings), out)


@pytest.mark.slow
def test_a_run_is_the_same_on_one_two_and_four_blas_threads(tmp_path, mnist_dir):
    outs = [tmp_path / f"threads-{t}" for t in (1, 2, 4)]
    for out, threads in zip(outs, (1, 2, 4), strict=True):
        report = synthesize_under(MLP, mnist_dir, out, threads)
    assert min(report["layers"][0]["density"], report["layers"][1]["density"]) < 0.1  # sparse
    assert differences(outs[0], outs[1]) == []
    assert differences(outs[0], outs[2]) == []


@pytest.mark.slow
def test_without_the_one_thread_policy_this_run_would_differ(tmp_path, mnist_dir, monkeypatch):
    # the check above can fail: on 2 BLAS threads the same run ends in other bits
    if not blas_can_use(2):
        pytest.skip("no BLAS with two threads here")
    synthesize_under(MLP, mnist_dir, tmp_path / "one", 1)
    monkeypatch.setattr(reproducible, "BLAS_THREADS", 2)
    synthesize_under(MLP, mnist_dir, tmp_path / "two", 2)
    assert differences(tmp_path / "one", tmp_path / "two") != []


SYNTHESIZE_BOTH = """
import json, sys
from nestref.nest.config import SynthesisConfig
from nestref.run.synthesize import synthesize
for name, settings in json.loads(sys.argv[1]).items():
    synthesize(SynthesisConfig(data_dir=sys.argv[2], **settings), sys.argv[3] + "/" + name)
"""


@pytest.mark.slow
def test_kernels_compiled_for_a_generic_cpu_give_the_bits_of_this_one(tmp_path, mnist_dir):
    outs = {}
    for cpu in ("generic", "host"):
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_NAME"}
        env["NUMBA_CACHE_DIR"] = str(tmp_path / f"cache-{cpu}")  # compiled afresh for each
        if cpu == "generic":
            env["NUMBA_CPU_NAME"] = "generic"
        outs[cpu] = tmp_path / cpu
        done = subprocess.run([sys.executable, "-c", SYNTHESIZE_BOTH,
                               json.dumps({"mlp": MLP, "conv": CONV}), str(mnist_dir),
                               str(outs[cpu])], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((outs["generic"] / "conv" / "report.json").read_text())
    assert report["numerics"]["numba_cpu"] == "generic"
    assert report["conv_kept_area"][0]["area_density"] < 1  # the partial-area path ran
    for name in ("mlp", "conv"):
        # the report names the CPU the kernels were compiled for: the one field that may differ
        assert differences(outs["generic"] / name, outs["host"] / name,
                           CLOCKS | {"numba_cpu"}) == []


def test_the_report_records_what_the_numbers_depend_on():
    record = reproducible.numerics_record()
    assert record["blas_threads"] == 1
    assert record["numba_cpu"] and record["numpy"] == np.__version__
    if reproducible.blas_libraries():
        assert record["blas"]["library"] and record["blas"]["kernel"]


def test_one_blas_thread_holds_inside_and_is_lifted_after():
    if not blas_can_use(2):
        pytest.skip("no BLAS with two threads here")
    with threadpool_limits(limits=2, user_api="blas"):
        with reproducible.one_blas_thread():
            assert {lib["threads"] for lib in reproducible.blas_libraries()} == {1}
        assert {lib["threads"] for lib in reproducible.blas_libraries()} == {2}
