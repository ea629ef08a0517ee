"""atomic_file: a finished write lands under the target name with the permissions a plain open() would give it."""
import os
import stat

import pytest

from medmamba.io_utils import atomic_file


def test_atomic_file_renames_with_default_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "results.json"
    with atomic_file(target, suffix=".json") as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("{}")
        assert not target.exists()
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomic_file_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
