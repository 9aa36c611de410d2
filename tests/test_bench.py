"""Smoke tests of the benchmarks (benchmarks/): they run on a tiny setting and return well-formed
results.

No timing is asserted (the machine is shared); what is checked is the shape of the
results, that PyTorch's twin computes the same function as the nestref network, and
that the BLAS thread setting is applied and then restored.
"""
import json
import math

import numpy as np
import pytest

from benchmarks import common
from benchmarks import training as bench
from nestref.nest.networks import build

# one thread: on a busy 2-core machine, two spinning BLAS/OpenMP threads per framework
# can make a few tiny batches take seconds
TINY = dict(batches=2, batch_size=8, repeats=1, warmup=1, peak_size=64, threads=1)


@pytest.fixture
def no_mnist(monkeypatch, tmp_path):
    """Hide every MNIST copy, so the benchmark falls back to random data."""
    monkeypatch.delenv("NESTREF_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "no-mnist-here"


def _check_timing(timing, n_batches, repeats):
    assert len(timing["seconds"]) == repeats
    assert all(s > 0 for s in timing["seconds"])
    assert timing["median_seconds"] == float(np.median(timing["seconds"]))
    assert timing["ms_per_batch"] == pytest.approx(1e3 * timing["median_seconds"] / n_batches)
    assert timing["seconds_per_epoch"] > timing["median_seconds"] / n_batches
    assert math.isfinite(timing["gflops"]) and timing["gflops"] > 0
    assert 0 < timing["fraction_of_peak"] and math.isfinite(timing["fraction_of_peak"])


def test_nestref_alone_on_random_data(no_mnist):
    results = bench.run_benchmark(use_torch=False, data_dir=no_mnist, **TINY)
    json.dumps(results)  # plain data all the way down
    assert set(results["networks"]) == set(bench.NETWORKS)
    assert results["peak_gflops"] > 0
    assert results["environment"]["torch_version"] is None
    for name, r in results["networks"].items():
        assert r["data"].startswith("random data")
        assert r["batches"] == 2 and r["target"] == bench.TARGETS[name]
        assert r["torch"] is None and r["ratio"] is None and r["meets_target"] is None
        assert r["first_loss"]["torch"] is None and math.isfinite(r["first_loss"]["nestref"])
        _check_timing(r["nestref"], 2, 1)
    text = bench.format_results(results)
    assert "lenet-300-100" in text and "lenet5" in text and "random data" in text


def test_against_pytorch_on_mnist(mnist_dir):
    pytest.importorskip("torch")
    results = bench.run_benchmark(
        data_dir=mnist_dir, repeats=2, **{k: v for k, v in TINY.items() if k != "repeats"}
    )
    json.dumps(results)
    assert results["environment"]["torch_threads"] >= 1
    for name, r in results["networks"].items():
        assert r["data"].startswith("MNIST")
        _check_timing(r["nestref"], 2, 2)
        _check_timing(r["torch"], 2, 2)
        assert r["ratio"] == pytest.approx(
            r["nestref"]["median_seconds"] / r["torch"]["median_seconds"]
        )
        assert r["meets_target"] == (r["ratio"] <= bench.TARGETS[name])
        # same weights, same data: the two frameworks see the same first loss
        assert r["first_loss"]["torch"] == pytest.approx(r["first_loss"]["nestref"], rel=1e-5)
    assert "ratio" in bench.format_results(results)


@pytest.mark.parametrize("arch", bench.NETWORKS)
def test_torch_twin_computes_the_same_function(arch):
    torch = pytest.importorskip("torch")
    net = build(arch, density=0.5, seed=3)  # masked: the twin must use W * M
    x = np.random.default_rng(0).random((5,) + net.input_shape, dtype=np.float32)
    with torch.no_grad():
        theirs = bench.torch_twin(net)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(theirs, net.forward(x), rtol=1e-4, atol=1e-5)


def test_threads_are_set_for_the_run_and_restored():
    if common.blas_threads() is None:
        pytest.skip("threadpoolctl finds no BLAS here")
    with common.limited_blas(2):  # a known count to come back to, even where BLAS has one thread
        before = common.blas_threads()
        results = bench.run_benchmark(networks=["lenet-300-100"], use_torch=False, **TINY)
        assert results["environment"]["blas_threads"] == 1
        assert common.blas_threads() == before == 2


def test_profile_has_a_row_per_layer(no_mnist):
    profile = bench.profile_layers("lenet5", n_batches=2, batch_size=8, data_dir=no_mnist)
    assert [row["layer"] for row in profile["rows"]] == [
        repr(layer) for layer in build("lenet5").layers
    ]
    parts = (
        sum(r["forward_ms"] + r["backward_ms"] for r in profile["rows"])
        + profile["loss_ms"]
        + profile["step_ms"]
    )
    assert profile["total_ms"] == pytest.approx(parts)
    assert all(r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in profile["rows"])
    assert "Conv2d" in bench.format_profile(profile)


def test_main_prints_the_table_and_writes_json(no_mnist, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(
        [
            "--quick",
            "--batches",
            "2",
            "--repeats",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--no-torch",
            "--networks",
            "lenet-300-100",
            "--data-dir",
            str(no_mnist),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "lenet-300-100" in printed and "nestref ms/batch" in printed and "GFLOP/s" in printed
    assert json.loads(out.read_text())["networks"]["lenet-300-100"]["batches"] == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"networks": ["vgg"]}, "networks"),
    ({"batches": 0}, "batches"),
    ({"repeats": 0}, "repeats"),
    ({"threads": 0}, "threads"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.run_benchmark(**{**TINY, **kwargs})


@pytest.mark.parametrize("argv", [["--batches", "0", "--no-torch"]])
def test_main_reports_bad_settings(argv, capsys):
    assert bench.main(argv) == 2
    assert "batches" in capsys.readouterr().err


# ------------------------------------------------------------ the other benchmarks
def test_sparse_step_quick_prints_a_ratio_per_density(capsys):
    from benchmarks import sparse_step
    assert sparse_step.main(["--quick", "--threads", "1", "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    for density in sparse_step.REPORTED:
        assert f"{density:>8.2f}" in printed
    assert "dense/sparse" in printed and "crossover" in printed and "load average" in printed


def test_sparse_step_measures_both_paths():
    from benchmarks import sparse_step
    results = sparse_step.measure(
        densities=(0.05, 0.5), steps=2, repeats=1, batch_size=8, threads=1
    )
    assert [row["density"] for row in results["rows"]] == [0.05, 0.5]
    for row in results["rows"]:
        assert row["sparse_ms"] > 0 and row["dense_ms"] > 0
        assert row["ratio"] == pytest.approx(row["dense_ms"] / row["sparse_ms"])
    rows = [{"density": 0.1, "ratio": 2.0}, {"density": 0.3, "ratio": 0.0}]
    assert sparse_step.crossover(rows) == pytest.approx(0.2)
    assert sparse_step.crossover([{"density": 0.1, "ratio": 2.0}]) is None
    with pytest.raises(ValueError, match="steps"):
        sparse_step.measure(steps=0)


def test_sparse_step_forces_each_path():
    from benchmarks import sparse_step
    net = build("lenet-300-100", density=0.5)
    assert all(
        layer.uses_sparse_kernels()
        for _, layer in sparse_step.forced(net.copy(), True).masked_layers()
    )
    assert not any(
        layer.uses_sparse_kernels() for _, layer in sparse_step.forced(net, False).masked_layers()
    )


def test_compact_quick_prints_the_ratios(capsys):
    from benchmarks import compact
    assert (
        compact.main(
            ["--quick", "--threads", "1", "--no-torch", "--images", "200", "--density", "0.2"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "compact vs dense" in printed
        and "compact vs masked" in printed
        and "load average" in printed
    )


def test_nest_run_quick_times_a_whole_run(mnist_dir, tmp_path, capsys):
    from benchmarks import nest_run
    assert nest_run.main(["--quick", "--threads", "1", "--data-dir", str(mnist_dir),
                          "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert (
        "min wall" in printed
        and "test error" in printed
        and (tmp_path / "run" / "report.json").exists()
    )


def test_dense_flops_come_from_the_accounting():
    from nestref.nest.accounting import DENSE_BASELINES
    assert {arch: bench.forward_flops(arch) for arch in bench.NETWORKS} == {
        arch: DENSE_BASELINES[arch]["flops"] for arch in bench.NETWORKS}
