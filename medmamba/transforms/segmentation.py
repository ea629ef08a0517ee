"""nnU-Net's own inference pre- and post-processing as MONAI dictionary transforms, for running a network trained
with nnU-Net plans inside a MONAI pipeline.

``NnUNetPreprocessd`` runs nnU-Net's ``DefaultPreprocessor`` on ``{"image": [channel files]}`` (crop to the non-zero
region, per-channel normalisation as the plans say, resampling to the configuration's spacing, nnU-Net's axis
order) and keeps nnU-Net's case properties beside the array; ``NnUNetPostprocessd`` takes the network's logits back
to a label map on the input's voxel grid with nnU-Net's
``convert_predicted_logits_to_segmentation_with_correct_shape``. Both are nnU-Net's functions, so the arrays are
nnU-Net's to the bit; only the plumbing is ours.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform


def _load_json(value: dict | str | os.PathLike) -> dict:
    if isinstance(value, dict):
        return copy.deepcopy(value)
    with open(value, encoding="utf-8") as f:
        return json.load(f)


class _NnUNetPlans:
    """The plans, configuration and label managers nnU-Net builds from ``plans.json`` and ``dataset.json``."""

    def __init__(self, plans: dict | str | os.PathLike, dataset_json: dict | str | os.PathLike, configuration: str):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.dataset_json = _load_json(dataset_json)
        self.plans_manager = PlansManager(_load_json(plans))
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        self.label_manager = self.plans_manager.get_label_manager(self.dataset_json)


class NnUNetPreprocessd(MapTransform):
    """nnU-Net's ``DefaultPreprocessor.run_case`` on each key's list of channel files.

    Args:
        keys: keys holding a list of image files, one per channel (as in ``imagesTs``).
        plans: ``plans.json`` (path or dict) of the trained model.
        dataset_json: its ``dataset.json`` (path or dict).
        configuration: e.g. "3d_fullres" or "2d".
        properties_suffix: nnU-Net's case properties go to ``f"{key}_{properties_suffix}"``.
        allow_missing_keys: as MONAI's ``MapTransform``.
    """

    def __init__(self, keys: KeysCollection, plans: dict | str | os.PathLike, dataset_json: dict | str | os.PathLike,
                 configuration: str, properties_suffix: str = "properties", allow_missing_keys: bool = False):
        from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

        super().__init__(keys, allow_missing_keys)
        self.nnunet = _NnUNetPlans(plans, dataset_json, configuration)
        self.preprocessor = DefaultPreprocessor(verbose=False)
        self.properties_suffix = properties_suffix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            files = [str(f) for f in ([d[key]] if isinstance(d[key], (str, os.PathLike)) else d[key])]
            array, _, properties = self.preprocessor.run_case(
                files, None, self.nnunet.plans_manager, self.nnunet.configuration_manager, self.nnunet.dataset_json)
            d[key] = torch.from_numpy(np.ascontiguousarray(array))
            d[f"{key}_{self.properties_suffix}"] = properties
        return d


class NnUNetPostprocessd(MapTransform):
    """nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` on each key's logits.

    Args:
        keys: keys holding logits (classes, *preprocessed spatial shape).
        preprocessing: the ``NnUNetPreprocessd`` that made the network's input (its plans and managers are used).
        properties_key: the key holding that input's nnU-Net properties (``"image_properties"`` by default).
        allow_missing_keys: as MONAI's ``MapTransform``.
    """

    def __init__(self, keys: KeysCollection, preprocessing: NnUNetPreprocessd,
                 properties_key: str = "image_properties", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.nnunet, self.properties_key = preprocessing.nnunet, properties_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        d = dict(data)
        for key in self.key_iterator(d):
            logits = torch.as_tensor(d[key]).float()
            segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, self.nnunet.plans_manager, self.nnunet.configuration_manager, self.nnunet.label_manager,
                d[self.properties_key], num_threads_torch=torch.get_num_threads())
            d[key] = torch.from_numpy(np.asarray(segmentation))
        return d


def segmentation_preprocessing(plans: dict | str | os.PathLike, dataset_json: dict | str | os.PathLike,
                               configuration: str, image_key: str = "image") -> Compose:
    """``{image_key: [channel files]}`` -> nnU-Net's network input, with its properties under ``image_properties``.

    Args:
        plans, dataset_json, configuration: see ``NnUNetPreprocessd``.
        image_key: the key of the channel files.

    Returns:
        A MONAI ``Compose`` of one ``NnUNetPreprocessd``.
    """
    return Compose([NnUNetPreprocessd(image_key, plans, dataset_json, configuration)])


def segmentation_postprocessing(preprocessing: Compose, pred_key: str = "pred", image_key: str = "image") -> Compose:
    """``{pred_key: logits, f"{image_key}_properties": ...}`` -> a label map on the input image's voxel grid
    (numpy axis order, as nnU-Net's readers return it).

    Args:
        preprocessing: what ``segmentation_preprocessing`` returned.
        pred_key: the key of the network's logits.
        image_key: the image key of the preprocessing.

    Returns:
        A MONAI ``Compose`` of one ``NnUNetPostprocessd``.
    """
    return Compose([NnUNetPostprocessd(pred_key, preprocessing.transforms[0], f"{image_key}_properties")])
