"""``medmamba doctor``: versions, nnU-Net settings, the scan backend, and whether nnU-Net finds our trainers."""
from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from importlib import metadata

NNUNET_ENV_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile",
                   "nnUNet_n_proc_DA", "nnUNet_def_n_proc")
PROBE_TRAINER = "MHSVMTrainer"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="versions, nnU-Net settings, scan backend and trainer discovery",
        description="Print the versions of torch, triton, numba, CUDA, nnunetv2 and monai, the nnU-Net environment "
                    "variables, which scan backend 'auto' uses, the numba kernels' cache and compile time, and "
                    "whether nnU-Net finds medmamba's trainers. Exits 1 when the trainers are not discoverable.")
    parser.add_argument("--warm", action="store_true",
                        help="compile the numba scan kernels now (or load them from the cache) and time it")
    parser.set_defaults(func=run)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def discovery_problems(environ=os.environ) -> list[str]:
    """What keeps nnU-Net from finding medmamba's trainers through ``nnUNet_extTrainer`` (empty: nothing)."""
    from medmamba.nnunet_plugins import discovery

    problems = []
    if not discovery.installed_pth_files():
        problems.append(f"the startup hook {discovery.PTH_NAME} is not in this interpreter's site-packages: "
                        "re-run `pip install -e .` (or `pip install .`) in this environment")
    listed = [p for p in environ.get(discovery.ENV_VAR, "").split(os.pathsep) if p]
    if discovery.TRAINER_FOLDER not in listed:
        problems.append(f"{discovery.ENV_VAR} does not list {discovery.TRAINER_FOLDER}: "
                        f"export {discovery.ENV_VAR}={discovery.with_folder(environ.get(discovery.ENV_VAR))}")
    return problems


def _find_with_nnunet(name: str) -> str:
    """Look ``name`` up exactly as ``nnUNetv2_train -tr name`` does; return its module, or raise."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    # nnU-Net imports every trainer module it ships; their imports' deprecation warnings are not the user's concern
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return recursive_find_trainer_class_by_name(name).__module__


def _numba_kernels(warm: bool) -> str:
    """One line on the numba kernels: their cache and the measured first-call compile time, or the warm-up."""
    from medmamba.kernels import causal_conv1d_numba, cross_scan_numba, route_fusion_numba, selective_scan_numba

    where = f"cache {selective_scan_numba.cache_dir()}"
    if warm:
        record_before = selective_scan_numba.compile_record()
        started = time.perf_counter()
        for module in (selective_scan_numba, cross_scan_numba, route_fusion_numba, causal_conv1d_numba):
            module.warm_up()
        seconds = time.perf_counter() - started
        loaded = record_before is not None and record_before == selective_scan_numba.compile_record()
        return f"numba kernels: {'loaded from the cache' if loaded else 'compiled'} in {seconds:.1f} s ({where})"
    record = selective_scan_numba.compile_record()
    if record is None:
        return (f"numba kernels: not compiled yet ({where}); the first CPU scan compiles them, "
                "`medmamba doctor --warm` does it now")
    times = ", ".join(f"{key} {seconds:.1f} s" for key, seconds in record["seconds"].items())
    return f"numba kernels: compiled on {record['when']}, first-call compile took {times} ({where})"


def run(args) -> int:
    import torch

    from medmamba.kernels.backends import numba_unavailable_reason, triton_available

    cuda = torch.cuda.is_available()
    print("versions")
    print(f"  torch     {torch.__version__}")
    print(f"  triton    {_version('triton')}")
    print(f"  numba     {_version('numba')}")
    print(f"  CUDA      {torch.version.cuda or 'none (CPU build)'}; "
          + (f"GPU: {torch.cuda.get_device_name(0)}" if cuda else "no GPU visible"))
    print(f"  nnunetv2  {_version('nnunetv2')}")
    print(f"  monai     {_version('monai')}")
    print("nnU-Net environment")
    for var in NNUNET_ENV_VARS:
        print(f"  {var}={os.environ[var]}" if var in os.environ else f"  {var} (unset)")
    numba_problem = numba_unavailable_reason()
    cpu_backend = "torch" if numba_problem else "numba"
    gpu_backend = "triton" if triton_available() else "torch"
    print(f"scan backend 'auto': {gpu_backend + ' on CUDA tensors, ' if cuda else ''}{cpu_backend} on CPU"
          + (f" (numba unavailable: {numba_problem})" if numba_problem else ""))
    if not numba_problem:
        print(_numba_kernels(args.warm))

    problems = discovery_problems()
    try:
        module = _find_with_nnunet(PROBE_TRAINER)
    except Exception as err:  # nnU-Net raises RuntimeError; a broken import may raise anything
        problems.append(f"nnU-Net could not load {PROBE_TRAINER}: {str(err).splitlines()[0]}")
        module = None
    if module is not None and not problems:
        print(f"trainers: discoverable by nnU-Net (-tr {PROBE_TRAINER} -> {module}.{PROBE_TRAINER})")
        return 0
    print("trainers: NOT discoverable by nnU-Net" if module is None else
          f"trainers: discoverable now (-tr {PROBE_TRAINER} -> {module}), but:")
    for problem in problems:
        print(f"  - {problem}")
    return 1 if module is None else 0
