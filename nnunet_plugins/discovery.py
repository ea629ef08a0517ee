"""Make nnU-Net find medmamba's trainers with no setup by the user.

nnU-Net looks a trainer name up in its own package, then in each folder listed in the environment variable
``nnUNet_extTrainer`` (joined by ``os.pathsep``), importing the modules it finds there as top-level modules.
Installing medmamba puts ``medmamba-nnunet.pth`` into site-packages. Python runs a ``.pth`` file's ``import``
line at every interpreter start; ours loads this file by path (without importing ``medmamba``, torch or nnunetv2)
and calls :func:`add_to_environ`, which appends :data:`TRAINER_FOLDER` to ``nnUNet_extTrainer``, keeping
whatever the user listed there and never adding it twice. Child processes inherit the variable.

Standard library only, and ``os.path`` rather than ``pathlib``: it runs at every interpreter start.
"""
from __future__ import annotations

import os

ENV_VAR = "nnUNet_extTrainer"
PTH_NAME = "medmamba-nnunet.pth"
HOOK_MODULE = "medmamba_nnunet_discovery"
# Holds only a uniquely named shim module: nnU-Net imports every module of the folder as a top-level name.
TRAINER_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext_trainer")


def with_folder(value: str | None, folder: str = TRAINER_FOLDER) -> str:
    """``value`` (an ``os.pathsep``-joined list, or None) with ``folder`` appended unless it is listed already."""
    entries = [entry for entry in (value or "").split(os.pathsep) if entry]
    if folder not in entries:
        entries.append(folder)
    return os.pathsep.join(entries)


def add_to_environ(environ=os.environ) -> None:
    """Append :data:`TRAINER_FOLDER` to ``environ["nnUNet_extTrainer"]`` (unless listed there already)."""
    environ[ENV_VAR] = with_folder(environ.get(ENV_VAR))


def pth_line(hook_path_expr: str) -> str:
    """The ``.pth`` line; ``hook_path_expr`` is a Python expression for this file's path at interpreter start.

    ``site`` runs the line with ``exec`` inside ``site.addpackage``, whose local ``sitedir`` (the folder holding
    the ``.pth``) the expression may use. A missing file (package removed, ``.pth`` left) is silently ignored.
    """
    return (
        f"import os, importlib.util as u; p = {hook_path_expr}; "
        f"s = u.spec_from_file_location({HOOK_MODULE!r}, p) if os.path.isfile(p) else None; "
        "m = s and u.module_from_spec(s); s and s.loader.exec_module(m); m and m.add_to_environ()\n"
    )


def installed_pth_files() -> list[str]:
    """Every ``medmamba-nnunet.pth`` in this interpreter's site-packages folders."""
    import site
    import sys

    folders = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    return sorted({os.path.join(f, PTH_NAME) for f in folders if os.path.isfile(os.path.join(f, PTH_NAME))})
