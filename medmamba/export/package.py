"""The model package: a zip with plans.json, dataset.json, one safetensors file per fold and a manifest.

``medmamba.json`` (the manifest) records how to rebuild the network without the trainer that trained it, the
channels and labels (names, RGB colours), and the sha256 of every other member. Reading a package refuses unsafe
member names, links, unlisted members and checksum mismatches; weights are read with safetensors (no pickle).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import stat
import struct
import zipfile
import zlib
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
    """Hex SHA-256 digest of ``data``, as the manifest records each member's."""
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
    """The package member holding a fold's weights: ``fold_<fold>.safetensors``."""
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
    """Input channels as ``{"index", "name"}``, by index, from dataset.json's ``channel_names`` (or the older
    ``modality``).

    Raises:
        MedMambaError: neither key maps channel indices to names.
    """
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    try:
        return [{"index": int(k), "name": str(v)} for k, v in sorted(channels.items(), key=lambda kv: int(kv[0]))]
    except (AttributeError, TypeError, ValueError):
        raise MedMambaError("dataset.json: channel_names must map channel indices to names") from None


# What reading a damaged or foreign zip can raise (zipfile, zlib and struct errors, I/O errors, encrypted or
# unsupported members).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError)


@contextlib.contextmanager
def _reading(zip_path: Path):
    """Turn the errors of reading a damaged zip into one line naming it."""
    try:
        yield
    except MedMambaError:
        raise
    except _ZIP_ERRORS as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise MedMambaError(f"{zip_path}: not a readable model package ({detail})") from None


def _check_members(zip_path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Safe member paths, no links, no name twice."""
    seen = set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise MedMambaError(f"{zip_path}: unsafe member path {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise MedMambaError(f"{zip_path}: member {name!r} is a link")
        if name in seen:
            raise MedMambaError(f"{zip_path}: member {name!r} appears twice")
        seen.add(name)


def _check_integrity(zip_path: Path, zf: zipfile.ZipFile) -> None:
    """Every member decompresses and matches its CRC-32 (what ``ZipFile.testzip`` checks, naming the member)."""
    for info in zf.infolist():
        try:
            with zf.open(info) as member:
                while member.read(1 << 22):
                    pass
        except _ZIP_ERRORS as err:
            detail = " ".join(str(err).split())[:200] or type(err).__name__
            raise MedMambaError(f"{zip_path}: member {info.filename!r} is corrupt ({detail})") from None


def _parse_json(zip_path: Path, name: str, data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as err:
        raise MedMambaError(f"{zip_path}: member {name!r} is not valid JSON ({err})") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _listing_problem(manifest) -> str | None:
    """What is wrong with the part of a manifest that describes the model (None: nothing)."""
    if not isinstance(manifest, dict):
        return "is not a JSON object"
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        return f"is not a {FORMAT} v{FORMAT_VERSION} manifest"
    folds, channels, labels = manifest.get("folds"), manifest.get("channels"), manifest.get("labels")
    if not isinstance(folds, list) or not folds or not all(_is_int(f) or f == "all" for f in folds):
        return "'folds' must be a non-empty list of fold numbers or 'all'"
    for key in ("trainer", "configuration"):
        if not isinstance(manifest.get(key), str):
            return f"{key!r} must be a string"
    if not isinstance(channels, list) or not channels or not all(
            isinstance(c, dict) and _is_int(c.get("index")) and isinstance(c.get("name"), str) for c in channels):
        return "'channels' must be a non-empty list of {index, name}"
    if not isinstance(labels, list) or not all(
            isinstance(lab, dict) and isinstance(lab.get("name"), str) and _is_int(lab.get("value"))
            and lab["value"] >= 0 and isinstance(lab.get("rgb"), list) and len(lab["rgb"]) == 3
            and all(_is_int(c) and 0 <= c <= 255 for c in lab["rgb"]) for lab in labels):
        return "'labels' must be a list of {name, value >= 0, rgb: three integers 0-255}"
    return None


def _loading_problem(manifest: dict) -> str | None:
    """What is wrong with the part of a manifest that loading and predicting need (None: nothing)."""
    files, network = manifest.get("files"), manifest.get("network")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return "'files' must map member names to sha256 digests"
    if not isinstance(manifest.get("file_ending"), str):
        return "'file_ending' must be a string"
    if not isinstance(network, dict) or network.get("builder") not in ("nnunet", "medmamba") or not (
            isinstance(network.get("name"), str) and isinstance(network.get("arch_init_kwargs"), dict)
            and isinstance(network.get("arch_init_kwargs_req_import"), list)
            and _is_int(network.get("num_input_channels")) and _is_int(network.get("num_output_channels"))):
        return "'network' must give builder (nnunet or medmamba), name, arch_init_kwargs, " \
               "arch_init_kwargs_req_import, num_input_channels and num_output_channels"
    if network["num_input_channels"] != len(manifest["channels"]):
        return (f"'network' takes {network['num_input_channels']} input channels, 'channels' lists "
                f"{len(manifest['channels'])}")
    mirroring = manifest.get("inference_allowed_mirroring_axes")
    if mirroring is not None and not (isinstance(mirroring, list) and all(_is_int(a) for a in mirroring)):
        return "'inference_allowed_mirroring_axes' must be null or a list of axes"
    return None


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
    """The manifest, the part that describes the model checked (member checksums are not verified): for listing a
    package's trainer, folds, channels and labels.

    Args:
        zip_path: the model package.

    Returns:
        The manifest (``medmamba.json``) as a dict.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise MedMambaError(f"{zip_path}: not a readable model package (no such file)")
    with _reading(zip_path), zipfile.ZipFile(zip_path) as zf:
        _check_members(zip_path, zf.infolist())
        if MANIFEST not in zf.namelist():
            raise MedMambaError(f"{zip_path}: no {MANIFEST} in the package")
        manifest = _parse_json(zip_path, MANIFEST, zf.read(MANIFEST))
    problem = _listing_problem(manifest)
    if problem:
        raise MedMambaError(f"{zip_path}: {MANIFEST} {problem}")
    return manifest


def load_package(zip_path: str | Path, folds: list | None = None) -> ModelPackage:
    """Read and verify a package: safe member names, no links, every member intact (CRC-32), listed, and its sha256
    matching; the weights read with safetensors.

    Args:
        zip_path: the model package.
        folds: the folds to load (default: all of the package's).

    Returns:
        The package, weights in memory.
    """
    from safetensors.torch import load as load_safetensors

    zip_path = Path(zip_path)
    manifest = read_manifest(zip_path)
    problem = _loading_problem(manifest)
    if problem:
        raise MedMambaError(f"{zip_path}: {MANIFEST} {problem}")
    listed = manifest["files"]
    with _reading(zip_path), zipfile.ZipFile(zip_path) as zf:
        _check_integrity(zip_path, zf)
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
    plans, dataset_json = (_parse_json(zip_path, name, data[name]) for name in ("plans.json", "dataset.json"))
    if not isinstance(plans, dict) or not isinstance(dataset_json, dict):
        raise MedMambaError(f"{zip_path}: plans.json and dataset.json must be JSON objects")
    weights = {}
    for fold in wanted:
        member = fold_member(fold)
        try:
            state = load_safetensors(data[member])
            for alias, stored in _aliases(data[member]).items():
                state[alias] = state[stored]
        except Exception as err:  # noqa: BLE001  (safetensors raises its own error types for a damaged file)
            detail = " ".join(str(err).split())[:200] or type(err).__name__
            raise MedMambaError(f"{zip_path}: {member} is not a readable safetensors file ({detail})") from None
        weights[fold] = state
    return ModelPackage(zip_path, manifest, plans, dataset_json, weights)


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
