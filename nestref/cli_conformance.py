"""``nestref conformance generate`` and ``nestref conformance check``: the conformance
cases' command (``nestref.cli`` hands ``nestref conformance ...`` over to ``main`` here). The
cases and the checking are ``nestref.conformance``'s; this module parses and prints.
"""
import argparse
import json
import sys
from pathlib import Path

from .conformance import DEFAULT_DIR, check, generate, load_adapter
from .errors import OutputExistsError


def main(argv=None):
    """``nestref conformance generate [--out DIR]``
    / ``nestref conformance check MODULE [--cases DIR]``."""
    parser = argparse.ArgumentParser(prog="nestref conformance",
                                     description="write or check the language-neutral "
                                                 "conformance cases")
    sub = parser.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="write the cases from nestref's own operators")
    g.add_argument("--out", default=str(DEFAULT_DIR),
                   help=f"output directory (default {DEFAULT_DIR})")
    c = sub.add_parser("check",
                       help="run the cases against an adapter module (see conformance/README.md)")
    c.add_argument("module", help="importable module, or path to a .py file, exposing OPS")
    c.add_argument("--cases", default=str(DEFAULT_DIR),
                   help=f"case directory (default {DEFAULT_DIR})")
    c.add_argument("--op", action="append",
                   help="only the cases of this op (repeatable), e.g. --op dense.forward")
    c.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    args = parser.parse_args(argv)

    if args.action == "generate":
        try:
            manifest = generate(args.out)
        except OutputExistsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            print(f"error: cannot write the cases to {args.out}: {err}", file=sys.stderr)
            return 2
        ops = sorted({c["op"] for c in manifest["cases"]})
        print(f"wrote {len(manifest['cases'])} cases of {len(ops)} ops to {args.out}")
        return 0
    manifest_path = Path(args.cases) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        names = {entry["op"] for entry in manifest["cases"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"error: cannot read {manifest_path} ({type(err).__name__}: {err}); "
              f"run `nestref conformance generate` or pass --cases DIR holding the cases",
              file=sys.stderr)
        return 2
    unknown = sorted(set(args.op or ()) - names)
    if unknown:
        print(f"error: no cases of op(s) {unknown}; the ops are {sorted(names)}", file=sys.stderr)
        return 2
    try:
        adapter = load_adapter(args.module)
        results = check(adapter, args.cases, args.op)
    except (Exception, SystemExit) as err:  # noqa: BLE001
        # any exception (sys.exit too): an adapter that cannot load is a user mistake, not a crash
        print(f"error: cannot use adapter {args.module!r}: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 2
    for r in results:
        if not (args.quiet and r.passed):
            print(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<44} {r.op:<26} {r.worst}")
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} cases passed")
    return 0 if passed == len(results) else 1
