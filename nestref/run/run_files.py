"""What a synthesis run writes into its directory, and the check of that directory before a run.

A run's directory holds

    nestref-run.json             written first: this directory is a nestref run's
    checkpoint.npz               after every step (the one before as checkpoint.prev.npz)
    rounds/prune-NNN.npz         each pruning round's network
    rounds/finetuned-NNN.npz     each fine-tuned selection's network
    selections/<name>/model.npz  each selection's compact network
    model.npz, report.json, history.json, figures/*.png   the headline selection's results
    nestref.lock                 while a process writes the run (``storage.hold_lock``)

A file counts as the run's own only if its name is one of these and the directory is a
run's (it holds ``nestref-run.json``, or a checkpoint with nestref's members, from runs
written before the marker). Anything else is the user's: ``--overwrite`` removes only the
run's own files, and refuses a directory where a file of the user's has a name the run
would write over.
"""
import re
import zipfile
from pathlib import Path

from ..data.storage import (
    LOCK_SUFFIX,
    check_writable_dir,
    checkpoint_exists,
    previous_path,
    save_json,
)
from ..errors import InvalidArgumentError, OutputExistsError, OutputPathError

CHECKPOINT = "checkpoint.npz"
CHECKPOINTS = (CHECKPOINT, previous_path(CHECKPOINT).name)  # the latest, and the one before
RUN_MARKER = "nestref-run.json"
LOCK = "nestref" + LOCK_SUFFIX  # held by the one process writing the run; nobody's file
RUN_FILES = (RUN_MARKER, *CHECKPOINTS, "report.json", "history.json", "model.npz")
FIGURES = (
    "grow_prune_curve.png",
    "validation_error.png",
    "widths_densities.png",
    "first_layer_masks.png",
)
_ROUND_FILE = re.compile(r"(prune|finetuned)-\d{3,}\.npz")
_SELECTION_NAME = re.compile(r"[a-z0-9-]+")  # "target", "budget-3800", "dense"
_TEMP_FILE = re.compile(r"\..+\.tmp")  # storage.atomic_write_bytes' temporary names
_CHECKPOINT_MEMBERS = {"manifest.npy", "state.npy", "spec.npy"}


def _is_run_subdir(relative):
    """Is the directory ``relative`` (inside a run's directory) one that a run writes into?"""
    parts = relative.parts
    return parts in (("figures",), ("rounds",), ("selections",)) or (
        len(parts) == 2 and parts[0] == "selections" and bool(_SELECTION_NAME.fullmatch(parts[1]))
    )


def is_run_file_name(relative):
    """Is ``relative``, a file in a directory ``_is_run_subdir`` accepts, named as a run's file?"""
    *dirs, name = relative.parts
    if _TEMP_FILE.fullmatch(name):  # only run directories are looked into
        return True
    if not dirs:
        return name in RUN_FILES
    if dirs == ["figures"]:
        return name in FIGURES
    if dirs == ["rounds"]:
        return bool(_ROUND_FILE.fullmatch(name))
    return len(dirs) == 2 and name == "model.npz"  # selections/<name>/model.npz


def _is_nestref_checkpoint(path):
    """Does ``path`` look like a checkpoint nestref wrote (a zip with its members)?"""
    try:
        with zipfile.ZipFile(path) as archive:
            return _CHECKPOINT_MEMBERS <= set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def is_run_directory(out):
    """Has a nestref run written into ``out``?"""
    out = Path(out)
    return (out / RUN_MARKER).is_file() or any(_is_nestref_checkpoint(out / n) for n in CHECKPOINTS)


def run_entries(out):
    """(the run's own files in ``out``, the user's files named as a run's, every other entry).

    The directories a run writes into (figures, rounds, selections and one per selection)
    are looked into; any other directory counts as one entry of the user's.
    """
    own, clashing, foreign = [], [], []
    out = Path(out)
    if not out.is_dir():
        return own, clashing, foreign
    ours = is_run_directory(out)
    pending = sorted(out.iterdir())
    while pending:
        entry = pending.pop(0)
        relative = entry.relative_to(out)
        if relative == Path(LOCK):
            continue
        if entry.is_dir() and not entry.is_symlink() and _is_run_subdir(relative):
            pending[:0] = sorted(entry.iterdir())
        elif entry.is_file() and is_run_file_name(relative):
            (own if ours else clashing).append(entry)
        else:
            foreign.append(entry)
    return own, clashing, foreign


def _names(paths, out, most=5):
    listed = ", ".join(str(p.relative_to(out)) for p in paths[:most])
    return listed + (", ..." if len(paths) > most else "")


def check_run_dir(out_dir, resume=False, overwrite=False):
    """Check a synthesis output directory before any training; True if there is a checkpoint
    to resume. Removes and creates nothing (``clear_run_files`` removes, once the data loads).

    With ``resume`` and a checkpoint there, accepts (restoring it will tell a run's
    checkpoint from anything else). Otherwise refuses (OutputExistsError) a directory
    holding files nestref did not write, unless ``overwrite`` and none of them has a name
    the run would write over; and one holding a run's checkpoint, unless ``overwrite``. Raises
    OutputPathError for a path that cannot be written.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise InvalidArgumentError("resume and overwrite exclude each other: --resume continues "
                                   "the run in --out, --overwrite starts it again; pass one")
    check_writable_dir(out)
    try:
        own, clashing, foreign = run_entries(out)
    except PermissionError as err:
        raise OutputPathError(f"--out {out}: cannot read the directory {err.filename} (permission "
                              f"denied); make it readable (chmod -R u+rwx {out}) or choose another "
                              f"--out") from err
    has_checkpoint = checkpoint_exists(out / CHECKPOINT)
    if resume and has_checkpoint:  # restoring it tells a run's checkpoint from anything else
        return True
    if clashing:
        raise OutputExistsError(f"--out {out} holds files with the names a run writes "
                                f"({_names(clashing, out)}) that no nestref run wrote there (no "
                                f"{RUN_MARKER}): the run would write over them; move them, or "
                                f"choose another directory")
    if overwrite:
        return False
    if foreign:
        raise OutputExistsError(f"--out {out} is not empty and holds files nestref did not write "
                                f"({_names(foreign, out)}): choose another directory, or pass "
                                f"--overwrite (it removes only nestref's own files)")
    if has_checkpoint:
        raise OutputExistsError(f"--out {out} holds a nestref run ({CHECKPOINT}): pass --resume to "
                                f"continue it, or --overwrite to start it again (removes the run's "
                                f"files)")
    # a run killed before its first step was saved left its marker and perhaps a half-written
    # file (storage.atomic_write_bytes' temporary name): nothing to resume and nothing to lose
    outputs = [p for p in own if p.name != RUN_MARKER and not _TEMP_FILE.fullmatch(p.name)]
    if outputs:
        raise OutputExistsError(f"--out {out} holds a nestref run's outputs ({outputs[0].name}, "
                                f"...) but no checkpoint to resume: pass --overwrite to replace "
                                f"them, or choose another directory")
    return False


def remove_interrupted_writes(out_dir):
    """Remove what writes cut short (a kill -9, a full disk) left in a run's directory: the
    temporary files of ``storage.atomic_write_bytes``. Call it holding the run's lock: then no
    other process is writing one."""
    own, _, _ = run_entries(out_dir)
    for path in own:
        if _TEMP_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)


def clear_run_files(out_dir):
    """Remove the run's own files from ``out_dir`` (and the run's directories left empty)."""
    out = Path(out_dir)
    own, _, _ = run_entries(out)
    for path in own:
        path.unlink()
    selections = sorted((out / "selections").iterdir()) if (out / "selections").is_dir() else []
    for sub in [*selections, out / "figures", out / "rounds", out / "selections"]:
        if sub.is_dir() and _is_run_subdir(sub.relative_to(out)) and not any(sub.iterdir()):
            sub.rmdir()


def mark_run_directory(out_dir, config_fields):
    """Write ``nestref-run.json`` (once): the directory is a run's from now on."""
    path = Path(out_dir) / RUN_MARKER
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_json(path, {"written_by": "nestref synthesize", **config_fields})

