"""Conformance vectors: every NeST operator as language-neutral cases a port can test against.

``generate(out_dir)`` builds the cases below (inputs drawn here, deterministically),
runs nestref's adapter (``nestref.tools.conformance_adapter``, the one place that calls
nestref's operators) on them and writes

    out_dir/manifest.json          every case: name, op, folder
    out_dir/<case>/case.json       op, dtype, params, inputs and expected outputs
                                   (file, dtype, shape), and how each output compares
    out_dir/<case>/inputs/<name>.npy, out_dir/<case>/expected/<name>.npy
                                   one array per input and expected output

``check(adapter, case_dir)`` runs any adapter (a module or object with ``OPS``, see
``conformance/README.md``) on the committed cases and returns one ``CaseResult`` per
case; a missing file, a wrong shape, a missing op or an adapter that raises is that
case's failure, never the run's. A failure names, per wrong output, the worst entry's N-d
index with the expected and actual values (or an exact compare's first differing entries),
and carries the case's note, the rule it tests; ``describe_case`` shows one case in full.
The format and every op are specified in ``conformance/README.md``.

Floor: the adapter calls operators from every floor (layers, models, optim, grow,
prune, accounting), so these modules sit beside ``synthesize``, under ``cli``.
"""
import difflib
import importlib
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import SOURCE_ROOT
from ..errors import InvalidArgumentError, OutputExistsError
from .conformance_cases import all_cases

FORMAT_VERSION = 1
DEFAULT_DIR = SOURCE_ROOT / "conformance"

# Tolerance policy (conformance/README.md, "Tolerances"): |actual - expected| <= atol + rtol *
# |expected|. float32 carries headroom for a port that sums in another order (BLAS blocking, direct
# convolution instead of im2col, fused multiply-add): each such reordering moves a sum of K products
# by up to ~K * 6e-8 of its terms' scale.
TOLERANCES = {"float32": {"rtol": 1e-4, "atol": 1e-5}, "float64": {"rtol": 1e-9, "atol": 1e-12}}


def _compare_rule(name, array, dtype):
    """Masks, indices and counts compare exactly; other floats within the case's tolerance."""
    if array.dtype.kind in "biu" or "mask" in name.split(".")[-1]:
        return "exact"
    return dict(TOLERANCES[dtype])


def _npy_ready(value):
    """A little-endian, C-order, non-object ndarray (0-d for scalars)."""
    # not ascontiguousarray: it turns a 0-d scalar into shape (1,)
    array = np.array(value, order="C")
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TypeError(f"cannot store {array.dtype} arrays in a conformance case")
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def _listing(arrays, folder, dtype=None):
    out = {}
    for name, array in sorted(arrays.items()):
        entry = {
            "file": f"{folder}/{name}.npy",
            "dtype": str(array.dtype),
            "shape": list(array.shape),
        }
        if dtype is not None:
            entry["compare"] = _compare_rule(name, array, dtype)
        out[name] = entry
    return out


def write_case(case_dir, case, expected):
    inputs = {k: _npy_ready(v) for k, v in case.inputs.items()}
    expected = {k: _npy_ready(v) for k, v in expected.items()}
    for folder, arrays in (("inputs", inputs), ("expected", expected)):
        if (case_dir / folder).exists():
            shutil.rmtree(case_dir / folder)
        (case_dir / folder).mkdir(parents=True)
        for name, array in arrays.items():
            np.save(case_dir / folder / f"{name}.npy", array, allow_pickle=False)
    record = {
        "name": case.name,
        "op": case.op,
        "dtype": case.dtype,
        "note": case.note,
        "params": case.params,
        "inputs": _listing(inputs, "inputs"),
        "expected": _listing(expected, "expected", case.dtype),
    }
    (case_dir / "case.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def _cases_written_before(out_dir):
    """The case folders an earlier ``generate`` listed in ``out_dir``'s manifest.

    Raises OutputExistsError for a directory that holds anything but no manifest of
    nestref's: those files are the user's, and generate neither removes nor mixes with them.
    """
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return []
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("description", "").startswith("nestref conformance cases"):
            folders = [entry.get("dir") for entry in manifest["cases"]]
            return [d for d in folders if isinstance(d, str) and d and Path(d).name == d]
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, KeyError, TypeError):
        pass
    raise OutputExistsError(f"{out_dir} is not empty and holds no conformance cases of nestref's "
                            f"(no manifest.json written by `nestref conformance generate`): "
                            f"choose a new or empty directory for --out")


def generate(out_dir=DEFAULT_DIR, adapter=None):
    """Write every case, with nestref's answers as the expected outputs. Returns the manifest.

    ``out_dir`` is new, empty, or one that ``generate`` wrote before: then only the case
    folders its manifest lists are replaced or (for a case that is gone) removed.
    """
    if adapter is None:
        from . import conformance_adapter as adapter
    out_dir = Path(out_dir)
    cases = all_cases()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError("two conformance cases share a name")
    for stale in set(_cases_written_before(out_dir)) - set(names):
        # a renamed or removed case leaves no folder behind
        if (out_dir / stale / "case.json").is_file():
            shutil.rmtree(out_dir / stale)
    entries = []
    for case in cases:
        expected = adapter.OPS[case.op](
            {k: v.copy() for k, v in case.inputs.items()}, json.loads(json.dumps(case.params))
        )
        write_case(out_dir / case.name, case, expected)
        entries.append({"name": case.name, "op": case.op, "dtype": case.dtype, "dir": case.name})
    manifest = {"format": FORMAT_VERSION, "description": "nestref conformance cases; see README.md",
                "cases": entries}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# ===================================================================== checking
SHOWN_DIFFERENCES = 5   # the differing entries an exact compare lists (a student reads them all)


@dataclass
class OutputResult:
    """One output of a case: passed or not, the margin it used and what to tell the reader."""
    name: str
    passed: bool
    # |a - e| / (atol + rtol |e|) at the worst entry; 0.0 for an exact compare that holds, inf on
    # a failure
    ratio: float
    message: str
    exact: bool = False


@dataclass
class CaseResult:
    name: str
    op: str
    passed: bool
    worst: str       # the wrong outputs, or what went wrong; on a pass, each output's margin
    # worst |a - e| / (atol + rtol |e|) over the toleranced outputs; inf on a failure
    ratio: float = 0.0
    note: str = ""   # the case's note: the rule it tests
    outputs: list = field(default_factory=list)   # one OutputResult per expected output


def load_case(case_dir):
    """(case.json record, {input name: array}); raises OSError/ValueError naming the problem."""
    record = json.loads((case_dir / "case.json").read_text())
    inputs = {name: _load_array(case_dir, name, entry) for name, entry in record["inputs"].items()}
    return record, inputs


def load_expected(case_dir, record):
    """{output name: expected array} of a case."""
    return {name: _load_array(case_dir, name, entry) for name, entry in record["expected"].items()}


def _load_array(case_dir, name, entry):
    path = case_dir / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"missing file {entry['file']}")
    array = np.load(path, allow_pickle=False)
    if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
        raise ValueError(f"{entry['file']} holds {array.dtype} {list(array.shape)}, case.json says "
                         f"{entry['dtype']} {entry['shape']}")
    return array


def _index(flat, shape):
    """A flat C-order index as the N-d index a reader finds the entry by: ``[1, 0, 2]``."""
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]"


def _value(x):
    """One entry, as many digits as a float32 or float64 needs to be told from its neighbours."""
    x = x.item() if hasattr(x, "item") else x
    return f"{x:.9g}" if isinstance(x, float) else str(x)


def _entries(flat_indices, actual, expected):
    return ", ".join(f"{_index(j, expected.shape)} expected {_value(expected.flat[j])} got "
                     f"{_value(actual.flat[j])}" for j in flat_indices[:SHOWN_DIFFERENCES])


def compare(name, actual, expected, rule):
    """(ok, worst ratio, message) for one output.

    A failure's message names the worst entry by its N-d index with the expected and actual
    values (tolerance), or the first differing entries (exact); a pass's message the margin.
    """
    try:
        actual = np.asarray(actual)
    except Exception as err:  # noqa: BLE001  (a port may hand back anything)
        return False, math.inf, f"{name}: not an array ({type(err).__name__}: {err})"
    if actual.shape != expected.shape:
        return (
            False,
            math.inf,
            f"{name}: shape {list(actual.shape)}, expected {list(expected.shape)}",
        )
    if actual.dtype.kind not in "biuf":
        return False, math.inf, f"{name}: dtype {actual.dtype} is not numeric"
    if rule == "exact":
        differ = np.flatnonzero(actual != expected)
        if differ.size == 0:
            return True, 0.0, f"{name} exact"
        listed = "first " if differ.size > SHOWN_DIFFERENCES else ""
        return False, math.inf, (f"{name}: {differ.size} of {expected.size} entries differ "
                                 f"(exact compare); {listed}{_entries(differ, actual, expected)}")
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if np.any(nan_a != nan_e):
        where = np.flatnonzero(nan_a != nan_e)
        return False, math.inf, (f"{name}: NaN where the expected value is not, or the other way "
                                 f"round, at {where.size} entries; {_entries(where, a, e)}")
    err = np.abs(np.where(nan_e, 0.0, a - e))
    bound = rule["atol"] + rule["rtol"] * np.abs(np.where(nan_e, 0.0, e))
    if err.size == 0:
        return True, 0.0, f"{name} empty"
    used = err / bound
    worst = int(np.argmax(used))
    ratio = float(used.flat[worst])
    if not math.isfinite(ratio):
        worst = int(np.flatnonzero(~np.isfinite(used))[0])
        return False, math.inf, (f"{name}: inf where the expected value is finite; "
                                 f"{_entries([worst], a, e)}")
    if ratio <= 1.0:
        return True, ratio, f"{name} {100 * ratio:.2g}%"
    outside = int(np.count_nonzero(used > 1.0))
    at = f" at {_index(worst, e.shape)}" if e.ndim else ""
    return False, ratio, (f"{name}: max |a-e| {float(err.flat[worst]):.3g}{at}: "
                          f"expected {_value(expected.flat[worst])}, "
                          f"got {_value(actual.flat[worst])} ({ratio:.2g} x the tolerance "
                          f"atol + rtol |e| = {float(bound.flat[worst]):.3g}); {outside} of "
                          f"{e.size} entries outside it")


def _failed(name, op, message, note=""):
    return CaseResult(name, op, False, message, math.inf, note)


def run_case(ops, record, inputs):
    """The adapter's outputs for a loaded case (``load_case``); the adapter gets copies of the
    inputs, since it may modify them."""
    return ops[record["op"]]({k: v.copy() for k, v in inputs.items()}, record["params"])


def check_case(ops, case_dir, name="?", op="?"):
    """Run one case; every failure becomes a failed CaseResult."""
    try:
        record, inputs = load_case(case_dir)
        name, op, note = record["name"], record["op"], record.get("note", "")
        expected = load_expected(case_dir, record)
    except Exception as err:  # noqa: BLE001  (any broken case is that case's failure)
        return _failed(name, op, f"unreadable case: {type(err).__name__}: {err}")
    if op not in ops:
        return _failed(name, op, f"the adapter has no op {op!r}", note)
    try:
        outputs = run_case(ops, record, inputs)
    # whatever the adapter raises, sys.exit included, fails only this case
    except (Exception, SystemExit) as err:  # noqa: BLE001
        return _failed(name, op, f"the adapter raised {type(err).__name__}: {err}", note)
    if not isinstance(outputs, dict):
        return _failed(name, op, f"the adapter returned {type(outputs).__name__}, not a dict", note)
    results = []
    for key, entry in record["expected"].items():
        if key not in outputs:
            results.append(OutputResult(key, False, math.inf,
                                        f"{key}: missing from the adapter's outputs"))
            continue
        ok, ratio, message = compare(key, outputs[key], expected[key], entry["compare"])
        results.append(OutputResult(key, ok, ratio, message, entry["compare"] == "exact"))
    wrong = [r.message for r in results if not r.passed]
    if wrong:
        return CaseResult(name, op, False, "; ".join(wrong), math.inf, note, results)
    toleranced = [r for r in results if not r.exact]
    margins = ", ".join(r.message for r in toleranced)
    exact = ", ".join(r.name for r in results if r.exact)
    summary = "; ".join(part for part in (margins and f"tolerance used: {margins}",
                                          exact and f"exact: {exact}") if part) or "no outputs"
    return CaseResult(name, op, True, summary, max((r.ratio for r in toleranced), default=0.0),
                      note, results)


def find_case(case_dir, name):
    """The folder of case ``name`` in case_dir's manifest; InvalidArgumentError naming the
    nearest names if there is none."""
    manifest = json.loads((Path(case_dir) / "manifest.json").read_text())
    folders = {entry["name"]: entry["dir"] for entry in manifest["cases"]}
    if name not in folders:
        near = difflib.get_close_matches(name, folders, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else "; see manifest.json"
        raise InvalidArgumentError(f"no case {name!r} in {case_dir}{hint}")
    return Path(case_dir) / folders[name]


def _array_text(array, indent="    "):
    text = np.array2string(np.asarray(array), threshold=400, max_line_width=96, separator=", ")
    return [indent + line for line in text.splitlines()]


def _rule_text(rule):
    return "exact" if rule == "exact" else f"rtol {rule['rtol']:g}, atol {rule['atol']:g}"


def describe_case(case_dir, ops=None):
    """The lines that show a case: its op, note, params, inputs and expected outputs; with
    ``ops`` (an adapter's OPS) also the adapter's output under each expected one, and whether it
    passes. For ``nestref conformance check --show``."""
    record, inputs = load_case(case_dir)
    expected = load_expected(case_dir, record)
    lines = [f"case {record['name']}: op {record['op']}, {record['dtype']}",
             f"rule: {record.get('note') or '(no note)'}",
             "params: " + json.dumps(record["params"], sort_keys=True), "inputs:"]
    for name, array in sorted(inputs.items()):
        lines += [f"  {name}: {array.dtype} {list(array.shape)}", *_array_text(array)]
    actual = None
    if ops is not None:
        try:
            actual = run_case(ops, record, inputs)
        except (Exception, SystemExit) as err:  # noqa: BLE001  (shown, like check_case's failure)
            lines.append(f"the adapter raised {type(err).__name__}: {err}")
    lines.append("expected outputs:")
    for name, array in sorted(expected.items()):
        rule = record["expected"][name]["compare"]
        lines += [f"  {name}: {array.dtype} {list(array.shape)}, compare {_rule_text(rule)}",
                  *_array_text(array)]
        if isinstance(actual, dict):
            if name not in actual:
                lines.append("    the adapter's: missing")
                continue
            ok, _, message = compare(name, actual[name], array, rule)
            lines += ["    the adapter's:", *_array_text(actual[name], "      "),
                      f"    -> {'PASS' if ok else 'FAIL'}: {message}"]
    return lines


def check(adapter, case_dir=DEFAULT_DIR, ops=None):
    """Run every case of case_dir/manifest.json (or only those of the op names in ``ops``)
    against ``adapter`` (a module or object with OPS)."""
    case_dir = Path(case_dir)
    manifest = json.loads((case_dir / "manifest.json").read_text())
    wanted = ops
    ops = getattr(adapter, "OPS", None)
    if not isinstance(ops, dict):
        raise TypeError(f"{getattr(adapter, '__name__', adapter)!r} has no OPS dict "
                         f"(op name -> fn(inputs, params) -> dict of outputs); "
                         f"see conformance/README.md")
    return [
        check_case(ops, case_dir / entry["dir"], entry["name"], entry["op"])
        for entry in manifest["cases"]
        if wanted is None or entry["op"] in wanted
    ]


def load_adapter(spec):
    """An adapter module by import name (``ports.torch.adapter``) or by .py path."""
    path = Path(spec)
    if spec.endswith(".py"):
        if not path.is_file():
            raise FileNotFoundError(f"no file {spec}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.parent))
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
        return module
    return importlib.import_module(spec)
