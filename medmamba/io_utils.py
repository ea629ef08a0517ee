"""Output folders and files that never cost a user a file: outputs appear complete under their final name or not
at all, and nothing a command did not write is ever deleted or replaced.

The rule for every command that writes a folder (``atomic_dir``):

- the folder does not exist: the output is written to a temporary sibling, which is renamed when complete;
- it is empty, or holds only a previous output of the same command (its marker file ``.medmamba-output.json``
  lists the command and the files it wrote): it is replaced, once the new output is complete;
- it holds anything else: refused (``check_output_dir``, before any work), unless ``overwrite`` is given; then
  the new files are moved in beside the others, the command's own earlier files are removed, and a file the
  command did not write is never deleted or replaced (a clash is refused before anything is moved).

Commands that write in place (training: its checkpoints must outlive a kill) claim their folder with
``claim_dir`` under the same rule. A single output file (``check_output_file``) is replaced only with
``overwrite``: nothing in a file says which command wrote it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterable

from medmamba.errors import MedMambaError

MARKER = ".medmamba-output.json"
TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-[^/]*")  # what atomic_file and atomic_dir write before renaming
OVERWRITE_OPTION = "--overwrite"
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) and put back at once
os.umask(_UMASK)


def _tree(folder: Path) -> set[str]:
    """Every file, link and folder under ``folder`` as POSIX paths relative to it (the marker left out)."""
    found = set()
    for root, dirs, files in os.walk(folder):
        rel = PurePosixPath(Path(root).relative_to(folder).as_posix())
        for name in dirs + files:
            found.add(str(rel / name) if str(rel) != "." else name)
    found.discard(MARKER)
    return found


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(marker, dict) and isinstance(marker.get("files"), list)
            and all(isinstance(f, str) and f for f in marker["files"])):
        return None  # not one of ours: the folder counts as someone else's
    return marker


class _Listing:
    """The entries a marker lists: files, and folders written as ``name/`` (everything under them included)."""

    def __init__(self, entries: Iterable[str]):
        self.exact, self.folders = set(), set()
        for entry in entries:
            parts = PurePosixPath(entry).parts
            self.exact.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
            if entry.endswith("/"):
                self.folders.add(entry.rstrip("/"))

    def covers(self, path: str) -> bool:
        parts = PurePosixPath(path).parts
        temporary = TEMPORARY.fullmatch(parts[-1])  # a listed entry's temporary name (atomic_file, atomic_dir)
        if temporary:
            return self.covers(str(PurePosixPath(*parts[:-1], temporary["name"])))
        return path in self.exact or any("/".join(parts[:i]) in self.folders for i in range(1, len(parts) + 1))


def _own_files(folder: Path, command: str) -> set[str]:
    """What ``command`` wrote in ``folder`` according to its marker (nothing without a marker of ``command``)."""
    marker = _read_marker(folder)
    return set(marker["files"]) if marker and marker.get("command") == command else set()


def _foreign(folder: Path, command: str) -> list[str]:
    """Entries of ``folder`` that ``command`` did not write (sorted); empty for an empty folder or its own output."""
    own = _Listing(_own_files(folder, command))
    return sorted(p for p in _tree(folder) if not own.covers(p))


def _refusal(target: Path, command: str, example: str) -> MedMambaError:
    return MedMambaError(f"{target}: holds files that `medmamba {command}` did not write (e.g. {example}); give "
                         f"{OVERWRITE_OPTION} to write beside them (none of them is deleted), or choose a new folder")


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _check_writable(target: Path) -> None:
    """The folder that will receive ``target`` (or its nearest existing ancestor) accepts a new entry."""
    parent = _nearest_existing(target.parent)
    if not parent.is_dir():
        raise MedMambaError(f"{target}: {parent} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=parent))
    except OSError as err:
        raise MedMambaError(f"{target}: cannot write in {parent} ({err.strerror or err})") from None


def _resolved(target: str | os.PathLike) -> Path:
    """``target``, or the folder it links to: a linked output folder is written where the link points."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() and target.is_dir() else target


def _check_entry(target: Path, folder: bool) -> None:
    if target.is_symlink() and not target.exists():
        raise MedMambaError(f"{target}: a broken or looping symbolic link")
    if folder and target.exists() and not target.is_dir():
        raise MedMambaError(f"{target}: exists and is not a folder")
    if not folder and target.is_dir():
        raise MedMambaError(f"{target}: is a folder, not a file")


def check_output_dir(target: str | os.PathLike, command: str, overwrite: bool = False) -> None:
    """Refuse an output folder before any work: unwritable, not a folder, or holding files ``command`` did not
    write (unless ``overwrite``).

    Args:
        target: the output folder.
        command: the command writing it, as recorded in its marker (e.g. ``"evaluate seg"``).
        overwrite: allow a folder holding other files (they are kept).
    """
    target = _resolved(target)
    _check_entry(target, folder=True)
    if target.is_dir() and not overwrite:
        foreign = _foreign(target, command)
        if foreign:
            raise _refusal(target, command, foreign[0])
    _check_writable(target)
    if overwrite and target.is_dir():
        _check_writable(target / MARKER)


def check_output_file(target: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an output file before any work: an existing file (unless ``overwrite``), a folder, or a place that
    cannot be written.

    Args:
        target: the output file.
        overwrite: allow replacing an existing file.
    """
    target = Path(target)
    _check_entry(target, folder=False)
    if target.exists() and not overwrite:
        raise MedMambaError(f"{target}: exists; give {OVERWRITE_OPTION} to replace it")
    _check_writable(target)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    created = []
    path = folder
    while not os.path.lexists(path):
        created.append(path)
        path = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: Iterable[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _write_marker(folder: Path, command: str, files: Iterable[str]) -> None:
    content = {"command": command, "files": sorted(files),
               "note": "written by medmamba: a later run of this command may replace the files listed here"}
    (folder / MARKER).write_text(json.dumps(content, indent=1), encoding="utf-8")


def _files(folder: Path) -> set[str]:
    return {p for p in _tree(folder) if not (folder / p).is_dir() or (folder / p).is_symlink()}


def _install(tmp: Path, target: Path, command: str, overwrite: bool) -> None:
    """Put the complete output ``tmp`` at ``target`` under the module's rule."""
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    _check_entry(target, folder=True)
    foreign = _foreign(target, command)
    if not foreign:  # empty, or only our previous output: swap, then drop the old one
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    if not overwrite:  # it changed while we worked
        raise _refusal(target, command, foreign[0])
    own_before = _own_files(target, command)
    own = _Listing(own_before)
    new = _files(tmp)
    existing = _tree(target)
    for path in sorted(new):
        parts = PurePosixPath(path).parts
        above = ["/".join(parts[:i]) for i in range(1, len(parts))]
        clash = next((p for p in above if p in existing and not (target / p).is_dir()), None)
        if clash is None and path in existing and ((target / path).is_dir() or not own.covers(path)):
            clash = path
        if clash:
            raise MedMambaError(f"{target / clash}: exists and was not written by `medmamba {command}`; not "
                                f"replaced (move it away or choose another output folder)")
    for path in sorted(own_before - new):
        stale = target / path
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
            _remove_empty(stale.parents[:len(PurePosixPath(path).parts) - 1])
    for path in sorted(new):
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / path, target / path)
    _write_marker(target, command, new)
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, command: str, overwrite: bool = False):
    """Yield an empty temporary folder beside ``target``; when the block completes, install it as ``target`` under
    the module's rule (with a marker naming ``command`` and the files written); on error delete it.

    Args:
        target: the output folder.
        command: the command writing it (e.g. ``"evaluate seg"``); a later run of it may replace the folder.
        overwrite: write into a folder that holds files the command did not write (they are kept).

    Yields:
        The temporary folder to write the output into.
    """
    target = _resolved(target)
    check_output_dir(target, command, overwrite)
    created = _make_parents(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _write_marker(tmp, command, _files(tmp))
        _install(tmp, target, command, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def claim_dir(target: str | os.PathLike, command: str, names: Iterable[str], overwrite: bool = False) -> Path:
    """Take ``target`` as the in-place output folder of ``command`` (training), which writes only ``names``
    (files, or folders written with a trailing ``/``). Allowed: a missing or empty folder, one holding only an
    earlier output of ``command``, or with ``overwrite`` one where none of ``names`` is someone else's file.

    Args:
        target: the output folder; created, with a marker listing ``names``.
        command: the command writing it (e.g. ``"train cls"``).
        names: everything the command may write in it.
        overwrite: write beside files the command did not write.

    Returns:
        ``target`` as a Path.
    """
    target = _resolved(target)
    names = set(names)
    check_output_dir(target, command, overwrite)
    if target.is_dir():
        own = _Listing(_own_files(target, command))
        for name in sorted(names):
            path = name.rstrip("/")
            if os.path.lexists(target / path) and not own.covers(path):
                raise MedMambaError(f"{target / path}: exists and was not written by `medmamba {command}`; not "
                                    f"replaced (move it away or choose another output folder)")
    target.mkdir(parents=True, exist_ok=True)
    _write_marker(target, command, names)
    return target


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``target`` (keeping ``suffix`` so writers pick the format); rename on success.

    Args:
        target: the file to write; replaced if it exists (callers check with ``check_output_file`` first).
        suffix: ending of the temporary name.

    Yields:
        The temporary path to write.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if tmp.exists():  # mkstemp's 0600, not what a plain open() would have made
        os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, target)
