"""The model package: a zip with plans.json, dataset.json, one safetensors file per fold and a manifest.

``medmamba.json`` (the manifest) records how to rebuild the network without the trainer that trained it, the
channels and labels (names, RGB colours), and the sha256 of every other member. Reading a package refuses unsafe
member names, links, unlisted members and checksum mismatches; weights are read with safetensors (no pickle).
"""
from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medmamba.errors import MedMambaError

MANIFEST = "medmamba.json"
FORMAT = "medmamba-model"
FORMAT_VERSION = 1
ALIASES_KEY = "medmamba_aliases"  # safetensors metadata: {alias key: stored key} for tensors shared in the state dict

# Tableau-10 colours (RGB 0-255), cycled for labels the dataset gives no colour.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_fold(fold) -> int | str:
    """nnU-Net's fold names: integers, or ``all``."""
    if str(fold) == "all":
        return "all"
    try:
        return int(fold)
    except ValueError:
        raise MedMambaError(f"fold {fold!r}: not a fold number or 'all'") from None


def fold_member(fold: int | str) -> str:
    return f"fold_{fold}.safetensors"


def label_entries(dataset_json: dict, label_manager) -> list[dict]:
    """Foreground labels as ``{"name", "value", "rgb"}``: ``value`` is the voxel value nnU-Net writes.

    Colours come from an optional ``"colors": {name: [r, g, b]}`` (0-255) in dataset.json, else from PALETTE.
    """
    colors = dataset_json.get("colors", {})
    names = [n for n, v in dataset_json["labels"].items() if n != "background" and v != label_manager.ignore_label]
    if label_manager.has_regions:  # region-based training writes regions_class_order[i] for the i-th region
        values = list(label_manager.regions_class_order)
    else:
        values = [int(dataset_json["labels"][n]) for n in names]
    entries = []
    for i, (name, value) in enumerate(zip(names, values)):
        rgb = colors.get(name, PALETTE[i % len(PALETTE)])
        if len(rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in rgb):
            raise MedMambaError(f"dataset.json: colour of label {name!r} must be three integers 0-255, got {rgb}")
        entries.append({"name": name, "value": int(value), "rgb": list(rgb)})
    return entries


def channel_entries(dataset_json: dict) -> list[dict]:
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    return [{"index": int(k), "name": v} for k, v in sorted(channels.items(), key=lambda kv: int(kv[0]))]


def _check_member_name(zip_path: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise MedMambaError(f"{zip_path}: unsafe member path {name!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise MedMambaError(f"{zip_path}: member {name!r} is a link")


@dataclass
class ModelPackage:
    """A verified package, read into memory."""

    path: Path
    manifest: dict
    plans: dict
    dataset_json: dict
    weights: dict  # fold -> state dict (CPU tensors)

    @property
    def folds(self) -> list:
        return list(self.weights)


def read_manifest(zip_path: str | Path) -> dict:
    """The manifest only (no checksum verification): for listing a package's labels and channels."""
    zip_path = Path(zip_path)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                _check_member_name(zip_path, info)
            return json.loads(zf.read(MANIFEST))
    except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError) as err:
        raise MedMambaError(f"{zip_path}: not a readable model package ({err})") from None
    except KeyError:
        raise MedMambaError(f"{zip_path}: no {MANIFEST} in the package") from None


def load_package(zip_path: str | Path, folds: list | None = None) -> ModelPackage:
    """Read and verify a package: safe member names, no links, every member listed and its sha256 matching."""
    from safetensors.torch import load as load_safetensors

    zip_path = Path(zip_path)
    manifest = read_manifest(zip_path)
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise MedMambaError(f"{zip_path}: not a {FORMAT} v{FORMAT_VERSION} package")
    listed = manifest["files"]
    with zipfile.ZipFile(zip_path) as zf:
        members = {i.filename for i in zf.infolist() if not i.is_dir()}
        unlisted = sorted(members - set(listed) - {MANIFEST})
        if unlisted:
            raise MedMambaError(f"{zip_path}: member {unlisted[0]!r} is not listed in {MANIFEST}")
        wanted = manifest["folds"] if folds is None else [parse_fold(f) for f in folds]
        missing_folds = [f for f in wanted if fold_member(f) not in listed]
        if missing_folds:
            raise MedMambaError(f"{zip_path}: fold {missing_folds[0]} is not in the package (has {manifest['folds']})")
        needed = ["plans.json", "dataset.json", *(fold_member(f) for f in wanted)]
        data = {}
        for name in needed:
            if name not in members:
                raise MedMambaError(f"{zip_path}: member {name!r} is missing")
            data[name] = zf.read(name)
            if sha256(data[name]) != listed[name]:
                raise MedMambaError(f"{zip_path}: checksum mismatch for {name}")
    weights = {}
    for fold in wanted:
        blob = data[fold_member(fold)]
        state = load_safetensors(blob)
        for alias, stored in _aliases(blob).items():
            state[alias] = state[stored]
        weights[fold] = state
    return ModelPackage(zip_path, manifest, json.loads(data["plans.json"]), json.loads(data["dataset.json"]), weights)


def _aliases(blob: bytes) -> dict:
    header_len = int.from_bytes(blob[:8], "little")
    metadata = json.loads(blob[8:8 + header_len]).get("__metadata__") or {}
    return json.loads(metadata.get(ALIASES_KEY, "{}"))


def state_dict_to_safetensors(state: dict) -> bytes:
    """Serialise a state dict; tensors shared under several keys are stored once and recorded as aliases."""
    from safetensors.torch import save

    stored, aliases, seen = {}, {}, {}
    for key, tensor in state.items():
        identity = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and identity in seen:
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        stored[key] = tensor.detach().cpu().contiguous()
    return save(stored, metadata={ALIASES_KEY: json.dumps(aliases)})
