"""nnU-Net finds medmamba's trainers with nothing set up: the startup hook and ``medmamba doctor``."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import NNUNET_TEST_TRAINERS

from medmamba.nnunet_plugins import discovery

PROBE = r"""
import json, os, subprocess, sys
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('nnUNet_extTrainer'))"],
                       capture_output=True, encoding="utf-8", errors="replace", env=os.environ.copy()).stdout.strip()
print(json.dumps({"value": os.environ.get("nnUNet_extTrainer"), "child": child,
                  "heavy": [m for m in ("medmamba", "torch", "nnunetv2", "numpy") if m in sys.modules]}))
"""


def probe(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         encoding="utf-8", errors="replace", check=True).stdout
    return json.loads(out)


def env_with(ext_trainer: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != discovery.ENV_VAR}
    if ext_trainer is not None:
        env[discovery.ENV_VAR] = ext_trainer
    return env


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ["OURS"]),
        ("", ["OURS"]),
        ("/user/a", ["/user/a", "OURS"]),
        (os.pathsep.join(["/user/a", "", "/user/b"]), ["/user/a", "/user/b", "OURS"]),
        (os.pathsep.join(["OURS", "/user/a"]), ["OURS", "/user/a"]),
    ],
)
def test_with_folder_appends_once_and_keeps_the_users_folders(value, expected):
    folder = "/site/medmamba/nnunet_plugins/ext_trainer"
    value = None if value is None else value.replace("OURS", folder)
    assert discovery.with_folder(value, folder) == os.pathsep.join(e.replace("OURS", folder) for e in expected)


def test_startup_hook_is_installed_and_points_at_this_package():
    pth_files = discovery.installed_pth_files()
    assert pth_files, f"{discovery.PTH_NAME} missing from site-packages: re-run pip install -e ."
    line = Path(pth_files[0]).read_text()
    assert line.startswith("import ") and line.count("\n") == 1  # site runs exactly one import line
    assert str(Path(discovery.__file__).resolve()) in line or "sitedir" in line


def test_hook_sets_ext_trainer_when_unset_without_heavy_imports():
    result = probe(env_with(None))
    assert result["value"] == discovery.TRAINER_FOLDER
    assert result["child"] == discovery.TRAINER_FOLDER  # a child process does not add it again
    assert result["heavy"] == []


def test_hook_keeps_a_users_folders_and_adds_ours_once():
    user = os.pathsep.join([str(NNUNET_TEST_TRAINERS), "/does/not/exist"])
    expected = os.pathsep.join([user, discovery.TRAINER_FOLDER])
    result = probe(env_with(user))
    assert result["value"] == expected and result["child"] == expected
    assert probe(env_with(expected))["value"] == expected


FIND = r"""
import json, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
found = {name: recursive_find_trainer_class_by_name(name) for name in sys.argv[1:]}
print("RESULT" + json.dumps({name: [cls.__module__, cls.__name__, cls.recipe.get("num_epochs"), cls.network_name]
                             for name, cls in found.items()}))
"""


def find_trainers(env: dict, *names: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", FIND, *names], env=env, capture_output=True,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_nnunet_finds_our_trainers_with_ext_trainer_unset():
    found = find_trainers(env_with(None), "MHSVMTrainer", "SegMambaTrainer_5epochs", "MambaOutTrainer_500epochs")
    assert found == {
        "MHSVMTrainer": ["medmamba.nnunet_plugins.trainers", "MHSVMTrainer", 300, "mhs_vm_unet"],
        "SegMambaTrainer_5epochs": ["medmamba.nnunet_plugins.trainers", "SegMambaTrainer_5epochs", 5, "segmamba"],
        "MambaOutTrainer_500epochs": ["medmamba.nnunet_plugins.trainers", "MambaOutTrainer_500epochs", 500,
                                      "mambaout_unet"],
    }


def test_nnunet_finds_ours_and_the_users_trainers_together():
    found = find_trainers(env_with(str(NNUNET_TEST_TRAINERS)), "MHSVMTrainer_tiny", "UMambaBotTrainer_1epoch")
    assert found["MHSVMTrainer_tiny"][:2] == ["medmamba_test_trainers", "MHSVMTrainer_tiny"]
    assert found["UMambaBotTrainer_1epoch"] == ["medmamba.nnunet_plugins.trainers", "UMambaBotTrainer_1epoch", 1,
                                                "umamba_bot"]


def test_doctor_reports_versions_backend_and_discovery():
    from medmamba.cli.doctor import discovery_problems

    proc = subprocess.run([Path(sys.executable).parent / "medmamba", "doctor"], env=env_with(None),
                          capture_output=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from importlib.metadata import version

    import nnunetv2  # noqa: F401  (installed: its version must be reported)
    import torch

    backend = "triton" if torch.cuda.is_available() else "numba on CPU"
    for expected in (f"torch     {torch.__version__}", f"nnunetv2  {version('nnunetv2')}",
                     f"monai     {version('monai')}", f"nnUNet_extTrainer={discovery.TRAINER_FOLDER}",
                     f"scan backend 'auto': {backend}", "trainers: discoverable by nnU-Net"):
        assert expected in proc.stdout, (expected, proc.stdout)
    # and what it says when the variable lost our folder
    problems = discovery_problems({discovery.ENV_VAR: "/user/a"})
    expected = f"export {discovery.ENV_VAR}=/user/a{os.pathsep}{discovery.TRAINER_FOLDER}"
    assert len(problems) == 1 and expected in problems[0]
