"""A tampered model.npz never reaches a kernel: ``load_compact`` raises ``ModelFileError``.

Hypothesis draws one tampering of a valid compact model (an index out of range or -1,
row starts that fall or overrun, a missing array, NaN or inf weights, a wrong shape or
dtype, a spec that is not JSON, names an unknown layer kind or breaks the chain of
shapes) and checks that loading names the file and the field, with no crash and no
network built. The untouched file loads and computes what was saved.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.data.storage import load_arrays, save_arrays
from nestref.errors import ModelFileError
from nestref.nest.networks import lenet5, lenet_300_100
from nestref.nest.prune import layer_input, prune_network, prune_partial_area
from nestref.run.compact import compact, load_compact, save_compact

TAMPER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _models():
    dense = lenet_300_100(width_scale=0.2, seed=1)
    for _ in range(6):
        prune_network(dense, 0.4)
    conv = lenet5(width_scale=0.2, seed=2)
    x = np.random.default_rng(0).random((8, 1, 28, 28)).astype(np.float32)
    for _ in range(3):
        prune_network(conv, 0.3)
    prune_partial_area(conv, 2, 0.3, layer_input(conv, 2, x))
    # one model of SparseDense layers, one of Conv2d, pooling, Flatten and (dense) Dense layers
    return {
        "lenet-300-100": compact(dense, sparse_below=1.0).to_arrays(),
        "lenet5": compact(conv, sparse_below=0.0).to_arrays(),
    }


MODELS = _models()


def spec_of(arrays):
    return json.loads(str(arrays["spec"]))


def with_spec(arrays, spec):
    return {**arrays, "spec": np.array(json.dumps(spec) if not isinstance(spec, str) else spec)}


def keys_ending(arrays, suffix):
    return sorted(k for k in arrays if k.endswith(suffix))


@st.composite
def tampered(draw):
    """(description, tampered arrays) of one of the models."""
    kind = draw(
        st.sampled_from(
            [
                "index",
                "indptr_falls",
                "indptr_end",
                "missing",
                "not_finite",
                "shape",
                "dtype",
                "spec_json",
                "spec_type",
                "spec_kind",
                "spec_chain",
                "spec_field",
                "spec_missing",
                "area_shape",
            ]
        )
    )
    csr = kind in ("index", "indptr_falls", "indptr_end")
    name = (
        "lenet-300-100"
        if csr
        else "lenet5"
        if kind == "area_shape"
        else draw(st.sampled_from(sorted(MODELS)))
    )
    arrays = dict(MODELS[name])
    if kind == "index":
        key = draw(st.sampled_from(keys_ending(arrays, ".indices")))
        layer = int(key[len("layer") : key.index(".")])
        n_in = spec_of(arrays)["layers"][layer]["n_in"]
        bad = arrays[key].copy()
        if bad.size == 0:
            return kind, {k: v for k, v in arrays.items() if k != key}
        bad[draw(st.integers(0, bad.size - 1))] = draw(st.sampled_from([-1, -(2**40), n_in, 10**6]))
        arrays[key] = bad
    elif kind in ("indptr_falls", "indptr_end"):
        key = draw(st.sampled_from(keys_ending(arrays, ".indptr")))
        bad = arrays[key].copy()
        if kind == "indptr_end":
            bad[-1] += draw(st.sampled_from([-1, 1, 10**6]))
        else:
            where = draw(st.integers(1, bad.size - 1))
            bad[where] = bad[where - 1] - draw(st.integers(1, 5))
        arrays[key] = bad
    elif kind == "missing":
        del arrays[draw(st.sampled_from(sorted(k for k in arrays if k != "spec")))]
    elif kind == "not_finite":
        key = draw(
            st.sampled_from(
                sorted(
                    k
                    for k in arrays
                    if k != "spec" and arrays[k].dtype.kind == "f" and arrays[k].size
                )
            )
        )
        bad = arrays[key].astype(arrays[key].dtype)
        bad.flat[draw(st.integers(0, bad.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
        arrays[key] = bad
    elif kind == "shape":
        key = draw(st.sampled_from(sorted(k for k in arrays if k != "spec")))
        arrays[key] = np.concatenate([arrays[key].reshape(-1), arrays[key].reshape(-1)[:1]])
    elif kind == "dtype":
        key = draw(st.sampled_from(sorted(k for k in arrays if k != "spec")))
        arrays[key] = (
            arrays[key].astype(np.float64)
            if arrays[key].dtype.kind in "iu"
            else np.full(arrays[key].shape, "w")
        )
    elif kind == "spec_json":
        arrays = with_spec(
            arrays, draw(st.sampled_from(['{"format": "nestref-compact"', "[1, 2]", "7", "null"]))
        )
    elif kind == "spec_type":
        spec = spec_of(arrays)
        spec["layers"] = draw(st.sampled_from([[], None, "Dense", {"type": "ReLU"}]))
        arrays = with_spec(arrays, spec)
    elif kind == "spec_kind":
        spec = spec_of(arrays)
        spec["layers"][draw(st.integers(0, len(spec["layers"]) - 1))]["type"] = draw(
            st.sampled_from(["Linear", "Softmax", "", "__init__"])
        )
        arrays = with_spec(arrays, spec)
    elif kind == "spec_chain":
        spec = spec_of(arrays)
        spec["input_shape"] = [s + 1 for s in spec["input_shape"]]
        arrays = with_spec(arrays, spec)
    elif kind == "spec_field":
        spec = spec_of(arrays)
        sized = [cfg for cfg in spec["layers"] if "n_in" in cfg or "in_c" in cfg]
        cfg = draw(st.sampled_from(sized))
        key = draw(
            st.sampled_from(
                sorted(
                    k for k in cfg if k in ("n_in", "n_out", "in_c", "out_c", "kernel_size", "nnz")
                )
            )
        )
        cfg[key] = (
            draw(st.sampled_from([-1, 0, 2**40, 1.5, "3", None, True]))
            if key != "nnz"
            else cfg[key] + 1
        )
        arrays = with_spec(arrays, spec)
    elif kind == "spec_missing":
        spec = spec_of(arrays)
        del spec[draw(st.sampled_from(["format", "version", "input_shape", "name", "layers"]))]
        arrays = with_spec(arrays, spec)
    elif kind == "area_shape":
        keys = keys_ending(arrays, ".area_mask")
        arrays[keys[0]] = arrays[keys[0]][:, :, 1:, :]
    return kind, arrays


@TAMPER
@given(case=tampered())
def test_a_tampered_model_file_raises_a_model_file_error_naming_the_file(case):
    kind, arrays = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        save_arrays(path, arrays)
        with pytest.raises(ModelFileError) as caught:
            load_compact(path)
    message = str(caught.value)
    assert str(path) in message, kind
    assert "spec" in message or "layer" in message, (kind, message)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_untouched_model_file_loads_and_computes_what_was_saved(tmp_path, name):
    save_arrays(tmp_path / "model.npz", MODELS[name])
    loaded = load_compact(tmp_path / "model.npz")
    assert loaded.summary() == spec_of(MODELS[name])["layers"]
    again = load_arrays(tmp_path / "model.npz")
    assert set(again) == set(MODELS[name])
    x = np.random.default_rng(0).random((3,) + loaded.input_shape).astype(np.float32)
    save_compact(tmp_path / "again.npz", loaded)
    np.testing.assert_array_equal(
        load_compact(tmp_path / "again.npz").forward(x), loaded.forward(x)
    )


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04 truncated"])
def test_a_file_that_is_not_an_npz_is_a_model_file_error(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="model.npz"):
        load_compact(path)


def test_a_missing_file_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="nowhere.npz"):
        load_compact(tmp_path / "nowhere.npz")


def test_minus_one_does_not_wrap_around(tmp_path):
    arrays = dict(MODELS["lenet-300-100"])
    key = keys_ending(arrays, ".indices")[0]
    arrays[key] = arrays[key].copy()
    arrays[key][0] = -1
    save_arrays(tmp_path / "model.npz", arrays)
    with pytest.raises(ModelFileError, match=r"indices: column index -1 out of range"):
        load_compact(tmp_path / "model.npz")
