"""Drop-in ``mamba_ssm`` and ``causal_conv1d`` on medmamba's kernels, for running the papers' official code.

``install_mamba_ssm()`` registers modules named ``mamba_ssm`` and ``causal_conv1d`` (and the submodules the
papers' repositories import) in ``sys.modules``, backed by `medmamba.compat.ops`, `medmamba.compat.modules` and
`medmamba.compat.utils`; afterwards ``from mamba_ssm import Mamba`` works on CPU and on GPU without compiling.
"""
import importlib
import sys
import types
from importlib.machinery import ModuleSpec

from medmamba.compat import modules, ops, utils

ORIGIN = "medmamba.compat"

_INNER = ("mamba_inner_fn", "mamba_inner_ref", "mamba_inner_fn_no_out_proj", "bimamba_inner_fn", "bimamba_inner_ref")
_CONV = ("causal_conv1d_fn", "causal_conv1d_update")

# Each top-level package: module name -> the names it provides (looked up in ops, modules and utils).
SHIM_MODULES = {
    "causal_conv1d": {
        "causal_conv1d": _CONV,
        "causal_conv1d.causal_conv1d_interface": _CONV,
    },
    "mamba_ssm": {
        "mamba_ssm": ("selective_scan_fn", "mamba_inner_fn", "Mamba"),
        "mamba_ssm.ops": (),
        "mamba_ssm.ops.selective_scan_interface": ("selective_scan_fn", "selective_scan_ref", *_INNER),
        "mamba_ssm.ops.triton": (),
        "mamba_ssm.ops.triton.layer_norm": ("RMSNorm", "layer_norm_fn", "rms_norm_fn"),
        "mamba_ssm.ops.triton.selective_state_update": ("selective_state_update",),
        "mamba_ssm.modules": (),
        "mamba_ssm.modules.mamba_simple": ("Mamba",),
        "mamba_ssm.utils": (),
        "mamba_ssm.utils.generation": ("InferenceParams", "GenerationMixin"),
        "mamba_ssm.utils.hf": ("load_config_hf", "load_state_dict_hf"),
    },
}
VERSIONS = {"mamba_ssm": "1.1.1+medmamba", "causal_conv1d": "1.4.0+medmamba"}  # the APIs mirrored


def _lookup(name):
    for source in (ops, modules, utils):
        if hasattr(source, name):
            return getattr(source, name)
    raise AttributeError(f"medmamba.compat provides no {name!r}")


def _is_shim(module):
    return getattr(getattr(module, "__spec__", None), "origin", None) == ORIGIN


def _real_package_imports(package):
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def _register(package, table):
    """Replace ``package`` and all its submodules in sys.modules by the shim's modules."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    for name, attributes in table.items():
        module = types.ModuleType(name, f"medmamba's stand-in for {name}, see medmamba.compat")
        is_package = any(other.startswith(name + ".") for other in table)
        module.__spec__ = ModuleSpec(name, None, origin=ORIGIN, is_package=is_package)
        if is_package:
            module.__path__ = []  # submodules come from sys.modules only
        module.__dict__.update({attribute: _lookup(attribute) for attribute in attributes})
        module.__all__ = list(attributes)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    sys.modules[package].__version__ = VERSIONS[package]


def install_mamba_ssm(force: bool = False) -> list[str]:
    """Register ``mamba_ssm`` and ``causal_conv1d`` backed by medmamba's kernels where the real ones do not import.

    Call it before importing the official code (modules already imported keep the names they bound). Idempotent.

    Args:
        force: register the shim even where the real package imports (its modules are removed from sys.modules),
            e.g. on a CPU machine with a CUDA-only mamba_ssm installed.

    Returns:
        The module names registered by this call (empty when nothing changed).
    """
    registered = []
    for package, table in SHIM_MODULES.items():  # causal_conv1d first: mamba_ssm imports it
        if _is_shim(sys.modules.get(package)) or (not force and _real_package_imports(package)):
            continue
        _register(package, table)
        registered.extend(table)
    return registered


__all__ = ["install_mamba_ssm", "SHIM_MODULES"]
