"""Model registry in the style of timm: one ``@register_model`` entry per network, with its metadata.

A registered function builds the network: ``fn(spatial_dims=..., in_channels=..., out_channels=..., **kwargs)``.
``out_channels`` is the number of classes for segmentation and classification nets and the number of
image channels for restoration nets; ``create_model`` accepts ``num_classes`` as an alias.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

TASKS = ("segmentation", "classification", "restoration")
FAMILIES = (
    "pure Mamba",
    "U-Net variant",
    "hybrid with CNN",
    "hybrid with Transformer",
    "gated CNN without SSM",
)


@dataclass(frozen=True)
class Paper:
    """The publication a registered network comes from (``arxiv``: the arXiv identifier, e.g. "2402.15648")."""

    title: str
    venue: str
    year: int
    arxiv: str


@dataclass(frozen=True)
class ReportedResult:
    """A score the paper (or its official code's README) reports: ``metric`` with its unit where it has one
    (e.g. "PSNR dB"), on ``dataset``, ``value`` as printed there."""

    dataset: str
    metric: str
    value: float


@dataclass
class ModelEntry:
    """A registered network: its builder and metadata (task, family, scan, paper, presets, reference input).

    ``register_model`` checks ``task`` against ``TASKS`` and ``family`` against ``FAMILIES``.
    """

    name: str
    builder: Callable[..., Any]
    task: str
    spatial_dims: tuple[int, ...]
    family: str
    scan: str
    paper: Paper
    code_url: str
    reported: tuple[ReportedResult, ...] = ()
    # The parameter count (millions) that ``presets["paper"]`` must land within 5% of: the paper's, or, where the
    # paper states none, the official code's at the paper's configuration (``params_source`` names which).
    paper_params_m: float | None = None
    params_source: str = "paper"
    # Named constructor arguments, e.g. {"paper": {...}, "tiny": {...}}.
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Input used to measure FLOPs and latency at the reference configuration: (channels, *spatial).
    reference_input: dict[int, tuple[int, ...]] = field(default_factory=dict)
    trainer: str | None = None
    notes: str = ""
    # ``fn(official_state_dict, model) -> medmamba.weights.Converted``: maps an official checkpoint to ours (see
    # ``medmamba.import_weights``), as timm's ``checkpoint_filter_fn``; it lives beside the builder.
    checkpoint_filter: Callable[..., Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "spatial_dims": list(self.spatial_dims),
            "family": self.family,
            "scan": self.scan,
            "paper": asdict(self.paper),
            "code_url": self.code_url,
            "reported": [asdict(r) for r in self.reported],
            "paper_params_m": self.paper_params_m,
            "params_source": self.params_source,
            "presets": sorted(self.presets),
            "trainer": self.trainer,
            "notes": self.notes,
            "imports_official_weights": self.checkpoint_filter is not None,
        }


_REGISTRY: dict[str, ModelEntry] = {}
_NETS_PACKAGE = "medmamba.networks.nets"


def register_model(**metadata: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated builder under its function name (or ``name=``) with ``metadata``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = metadata.pop("name", fn.__name__)
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        entry = ModelEntry(name=name, builder=fn, **metadata)
        if entry.task not in TASKS:
            raise ValueError(f"model {name!r}: task {entry.task!r} is not one of {TASKS}")
        if entry.family not in FAMILIES:
            raise ValueError(f"model {name!r}: family {entry.family!r} is not one of {FAMILIES}")
        _REGISTRY[name] = entry
        return fn

    return decorator


def _populate() -> None:
    importlib.import_module(_NETS_PACKAGE)


def list_models(task: str | None = None, spatial_dims: int | None = None) -> list[str]:
    """Names of registered models, sorted, optionally filtered by task and spatial dims."""
    _populate()
    return sorted(
        name
        for name, e in _REGISTRY.items()
        if (task is None or e.task == task) and (spatial_dims is None or spatial_dims in e.spatial_dims)
    )


def model_entry(name: str) -> ModelEntry:
    """The registry entry of a model, importing the networks package first so that every model is registered.

    Args:
        name: the registered name, e.g. ``"vm_unet"``.

    Returns:
        The model's :class:`ModelEntry`.

    Raises:
        KeyError: ``name`` is not registered (the message lists the known names).
    """
    _populate()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def create_model(
    name: str,
    spatial_dims: int | None = None,
    in_channels: int = 1,
    out_channels: int | None = None,
    num_classes: int | None = None,
    preset: str | None = None,
    **kwargs: Any,
):
    """Build a registered model; ``preset`` selects a named configuration, explicit kwargs override it."""
    entry = model_entry(name)
    if spatial_dims is None:
        spatial_dims = entry.spatial_dims[0]
    if spatial_dims not in entry.spatial_dims:
        raise ValueError(f"model {name!r} supports spatial_dims {entry.spatial_dims}, not {spatial_dims}")
    if num_classes is not None and out_channels is not None and num_classes != out_channels:
        raise ValueError("give num_classes or out_channels, not two different values")
    out = out_channels if out_channels is not None else num_classes
    cfg: dict[str, Any] = {}
    if preset is not None:
        if preset not in entry.presets:
            raise ValueError(f"model {name!r} has no preset {preset!r}; presets: {sorted(entry.presets)}")
        cfg.update(entry.presets[preset])
    cfg.update(kwargs)
    if out is not None:
        cfg["out_channels"] = out
    return entry.builder(spatial_dims=spatial_dims, in_channels=in_channels, **cfg)
