"""The Slicer module's plain logic (MedMambaSegmentationLib), run without Slicer."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "slicer" / "MedMambaSegmentation"
sys.path.insert(0, str(MODULE_DIR))
import MedMambaSegmentationLib as lib  # noqa: E402


def _manifest(channels, labels=("liver",)):
    return {"format": "medmamba-model", "format_version": 1, "trainer": "MHSVMTrainer", "configuration": "3d_fullres",
            "folds": [0, 1], "channels": [{"index": i, "name": n} for i, n in enumerate(channels)],
            "labels": [{"name": n, "value": i + 1, "rgb": [1, 2, 3]} for i, n in enumerate(labels)], "files": {}}


def _package(path, manifest):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("medmamba.json", json.dumps(manifest))
    return path


def test_lib_imports_without_slicer():
    code = (f"import sys; sys.path.insert(0, {str(MODULE_DIR)!r}); import MedMambaSegmentationLib; "
            "assert 'slicer' not in sys.modules and 'qt' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_module_file_is_a_scripted_module():
    source = (MODULE_DIR / "MedMambaSegmentation.py").read_text()
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "loadSegmentation", "predict_command", "run_command"):
        assert name in source
    compile(source, "MedMambaSegmentation.py", "exec")


def test_predict_command_and_paths(tmp_path):
    image, seg = lib.work_paths(tmp_path, "CT chest: 1/2")
    assert (image.name, seg.name) == ("CT_chest_1_2.nrrd", "CT_chest_1_2.seg.nrrd")
    assert lib.work_paths(tmp_path, "...")[0].name == "volume.nrrd"
    assert lib.predict_command("m.zip", image, seg, "cuda", python="/py") == [
        "/py", "-m", "medmamba", "predict", "--model", "m.zip", "-i", str(image), "-o", str(seg),
        "--format", "seg.nrrd", "--device", "cuda"]
    assert lib.medmamba_installed()


def test_run_command_streams_lines_and_reports_last_error():
    lines = []
    lib.run_command([sys.executable, "-c", "import sys; print('a'); sys.stderr.write('b\\r c\\n')"], lines.append)
    assert lines == ["a", "b", "c"]
    with pytest.raises(lib.PredictionError, match="^boom: no model$"):
        lib.run_command([sys.executable, "-c", "import sys; print('working'); sys.exit('boom: no model')"])


def test_real_predict_error_surfaces_as_one_line(tmp_path):
    """The module's command runs the real ``medmamba predict``; its one-line error is what the user sees."""
    missing = tmp_path / "missing.zip"
    with pytest.raises(lib.PredictionError) as err:
        lib.run_command(lib.predict_command(missing, tmp_path / "in.nrrd", tmp_path / "out.seg.nrrd",
                                            python=sys.executable))
    assert str(err.value).startswith(f"medmamba predict: error: {missing}: not a readable model package")


def test_describe_and_single_channel_check(tmp_path):
    one = _package(tmp_path / "one.zip", _manifest(["CT"], ["liver", "tumour"]))
    assert lib.describe_package(one) == ("MHSVMTrainer (3d_fullres, folds 0, 1); input: CT; labels: liver, tumour")
    lib.require_single_channel(one)
    two = _package(tmp_path / "two.zip", _manifest(["T1", "T2"]))
    with pytest.raises(lib.PredictionError, match=r"takes 2 input channels \(T1, T2\)"):
        lib.require_single_channel(two)
