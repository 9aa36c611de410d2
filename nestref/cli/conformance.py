"""``nestref conformance generate`` and ``nestref conformance check``: the conformance
cases' command (``nestref.cli.main`` hands ``nestref conformance ...`` over to ``main`` here). The
cases and the checking are ``nestref.tools.conformance``'s; this module parses and prints.
"""
import argparse
import json
import sys
from pathlib import Path

from ..errors import InvalidArgumentError, OutputExistsError
from ..tools.conformance import (
    DEFAULT_DIR,
    check,
    describe_case,
    find_case,
    generate,
    load_adapter,
)

INDENT = " " * 6   # a failure's details sit under its FAIL line


def main(argv=None):
    """``nestref conformance generate [--out DIR]``
    / ``nestref conformance check MODULE [--cases DIR] [--op OP] [--quiet]``
    / ``nestref conformance check [MODULE] --show CASE``."""
    parser = argparse.ArgumentParser(prog="nestref conformance",
                                     description="write or check the language-neutral "
                                                 "conformance cases")
    sub = parser.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="write the cases from nestref's own operators")
    g.add_argument("--out", default=str(DEFAULT_DIR),
                   help=f"output directory (default {DEFAULT_DIR})")
    c = sub.add_parser("check",
                       help="run the cases against an adapter module (see conformance/README.md)")
    c.add_argument("module", nargs="?",
                   help="importable module, or path to a .py file, exposing OPS (optional with "
                        "--show)")
    c.add_argument("--cases", default=str(DEFAULT_DIR),
                   help=f"case directory (default {DEFAULT_DIR})")
    c.add_argument("--op", action="append",
                   help="only the cases of this op (repeatable), e.g. --op dense.forward")
    c.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    c.add_argument("--show", metavar="CASE",
                   help="print one case: its rule, params, inputs and expected outputs (and, "
                        "with MODULE, the adapter's outputs beside them)")
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
    if args.show is not None:
        return _show(args.cases, args.show, args.module)
    if args.module is None:
        print("error: give the adapter MODULE to check (or --show CASE to look at one case)",
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
        if r.passed and not args.quiet:
            print(f"PASS  {r.name:<44} {r.op:<26} {r.worst}")
        elif not r.passed:
            _print_failure(r)
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} cases passed")
    return 0 if passed == len(results) else 1


def _print_failure(result):
    """The FAIL line, then each wrong output on its own line (the worst entry's index and both
    values, or the first differing entries), then the rule the case tests."""
    wrong = [o for o in result.outputs if not o.passed]
    if wrong:
        head = f"{len(wrong)} of {len(result.outputs)} outputs wrong"
        details = [o.message for o in wrong]
    else:               # the case could not run: the reason is the whole story
        head, details = result.worst, []
    print(f"FAIL  {result.name:<44} {result.op:<26} {head}")
    for line in details:
        print(f"{INDENT}{line}")
    if result.note:
        print(f"{INDENT}rule: {result.note}")
    print(f"{INDENT}see: nestref conformance check MODULE --show {result.name}")


def _show(case_dir, name, module):
    try:
        folder = find_case(case_dir, name)
    except InvalidArgumentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ops = None
    if module is not None:
        try:
            ops = load_adapter(module).OPS
        except (Exception, SystemExit) as err:  # noqa: BLE001  (as in check: the user's adapter)
            print(f"error: cannot use adapter {module!r}: {type(err).__name__}: {err}",
                  file=sys.stderr)
            return 2
    for line in describe_case(folder, ops):
        print(line)
    return 0
