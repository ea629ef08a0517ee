
import numpy as np
import pytest
import torch

from medmamba.datasets.nnunet_raw import write_sitk
from medmamba.datasets.phantom import phantom_3d
from medmamba.transforms import restoration_degradation
from medmamba.transforms.classification import classification_eval_transforms, classification_train_transforms
from medmamba.transforms.segmentation import segmentation_postprocessing, segmentation_preprocessing

FG = {"mean": 0.7, "std": 0.2, "percentile_00_5": 0.1, "percentile_99_5": 1.0, "max": 2.0, "min": 0.0, "median": 0.7}
FG1 = {"mean": 3.0, "std": 0.5, "percentile_00_5": 1.2, "percentile_99_5": 4.0, "max": 6.0, "min": 0.0, "median": 3.0}
DATASET_JSON = {"channel_names": {"0": "CT", "1": "MR"}, "labels": {"background": 0, "a": 1, "b": 2},
                "numTraining": 1, "file_ending": ".nii.gz"}


def make_plans(transpose, spacing, schemes, use_mask, configuration):
    resampling = {"resampling_fn_data": "resample_data_or_seg_to_shape",
                  "resampling_fn_seg": "resample_data_or_seg_to_shape",
                  "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                  "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                         "force_separate_z": None}}
    return {
        "dataset_name": "D", "plans_name": "P", "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [10, 30, 28], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": transpose, "transpose_backward": [int(i) for i in np.argsort(transpose)],
        "experiment_planner_used": "x", "label_manager": "LabelManager",
        "configurations": {configuration: {
            "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [8, 16, 16], "median_image_size_in_voxels": [10, 30, 28], "spacing": spacing,
            "normalization_schemes": schemes, "use_mask_for_norm": use_mask, "batch_dice": True,
            "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []},
            **resampling}},
        "foreground_intensity_properties_per_channel": {"0": FG, "1": FG1},
    }


@pytest.mark.parametrize("transpose, schemes", [([0, 1, 2], ["CTNormalization", "ZScoreNormalization"]),
                                                ([2, 0, 1], ["ZScoreNormalization", "RescaleTo01Normalization"])])
def test_segmentation_round_trip_restores_the_label_map(tmp_path, transpose, schemes):
    """At the image's own spacing nnU-Net only crops to the non-zero region and transposes: logits made from the
    label map cropped and transposed here by index arithmetic come back as that label map on the input grid."""
    spacing = (3.5, 0.9, 1.0)
    image, label = phantom_3d((10, 30, 28), spacing, 2, seed=0)
    files = []
    for c, array in enumerate([image.copy(), image * 3 + 1]):
        array[:, :2] = 0  # a zero border: nnU-Net crops it away
        files.append(str(tmp_path / f"case_{c:04d}.nii.gz"))
        write_sitk(array, files[-1], spacing, origin=(5.0, -3.0, 2.0))
    label[:, :2] = 0
    plans = make_plans(transpose, [spacing[i] for i in transpose], schemes, [False, False], "3d_fullres")
    pre = segmentation_preprocessing(plans, DATASET_JSON, "3d_fullres")
    out = pre({"image": files})
    cropped = np.ascontiguousarray(label[:, 2:].transpose(transpose))
    assert tuple(out["image"].shape) == (2, *cropped.shape)
    body = out["image"][0].numpy()
    if schemes[0] == "ZScoreNormalization":  # z-score over the cropped volume
        assert abs(body.mean()) < 1e-4 and abs(body.std() - 1) < 1e-3
    logits = torch.nn.functional.one_hot(torch.from_numpy(cropped).long(), 3).permute(3, 0, 1, 2).float() * 10
    seg = segmentation_postprocessing(pre)({**out, "pred": logits})["pred"]
    np.testing.assert_array_equal(seg.numpy(), label)


@pytest.mark.nnunet
def test_segmentation_preprocessing_matches_nnunet_plan_and_preprocess(nnunet_phantom_preprocessed):
    """Our transform on a raw case gives the array nnU-Net's own plan_and_preprocess wrote for it."""
    from pathlib import Path

    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    data = nnunet_phantom_preprocessed
    base = Path(data["folders"]["nnUNet_preprocessed"], data["dataset_name"])
    folder = base / "nnUNetPlans_3d_fullres"
    case = sorted(p.name[: -len("_0000.nii.gz")] for p in Path(data["raw_images"]).iterdir())[0]
    expected = np.asarray(infer_dataset_class(str(folder))(str(folder)).load_case(case)[0])
    pre = segmentation_preprocessing(base / "nnUNetPlans.json", base / "dataset.json", "3d_fullres")
    out = pre({"image": [str(Path(data["raw_images"]) / f"{case}_0000.nii.gz")]})["image"]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def _image(seed=0, shape=(1, 48, 48)):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return torch.as_tensor(ndimage.gaussian_filter(rng.normal(size=shape), (0, 3, 3)).astype(np.float32) * 10 + 1)


def test_gaussian_and_rician_noise_levels():
    clean = _image()
    noisy = restoration_degradation("gaussian", std=0.1).set_random_state(1)({"image": clean})["image"]
    assert abs(float((noisy - clean).std()) - 0.1) < 0.01
    rician = restoration_degradation("rician", std=0.1).set_random_state(1)({"image": torch.zeros(1, 64, 64)})["image"]
    # pure-noise Rician magnitude is Rayleigh: mean sigma * sqrt(pi / 2)
    assert abs(float(rician.mean()) - 0.1 * np.sqrt(np.pi / 2)) < 0.01


def test_kspace_undersampling_matches_numpy_reference():
    clean = _image(2)
    pipeline = restoration_degradation("kspace", acceleration=4, center_fraction=0.1)
    pipeline.set_random_state(3)
    out = pipeline({"image": clean})["image"]
    mask = np.asarray(pipeline.transforms[0].masker.mask).reshape(-1)  # columns kept (last axis)
    assert 0.15 < mask.mean() < 0.45 and mask[len(mask) // 2]  # ~1/4 of the lines, centre always sampled
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(np.asarray(clean[0], np.float64)), norm="ortho"))
    expected = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace * mask[None, :]), norm="ortho")))
    np.testing.assert_allclose(np.asarray(out[0]), expected, atol=1e-4)


def test_lowdose_ct_noise_grows_as_dose_falls_and_keeps_the_mean():
    hu = _image(4, (1, 40, 40)) * 50 - 100  # soft-tissue-like HU
    stds = []
    for dose in (0.5, 0.05):
        out = restoration_degradation("lowdose_ct", dose_fraction=dose).set_random_state(0)({"image": hu})["image"]
        diff = np.asarray(out - hu)
        stds.append(diff.std())
        assert abs(diff.mean()) < 0.2 * diff.std()
    assert stds[1] > 2.0 * stds[0]  # noise std ~ 1/sqrt(dose): sqrt(10) ideally


def test_blur_and_unknown_degradations():
    clean = _image(5)
    blurred = restoration_degradation("blur", sigma=2.0)({"image": clean})["image"]
    def hf(x):
        return float(np.abs(np.diff(np.asarray(x), axis=-1)).mean())

    assert hf(blurred) < 0.8 * hf(clean)
    with pytest.raises(ValueError, match="unknown degradation"):
        restoration_degradation("snow")
    with pytest.raises(ValueError, match="takes no parameters"):
        restoration_degradation("blur", std=1.0)


def test_classification_pipelines(tmp_path):
    path = tmp_path / "img.nii.gz"
    write_sitk(np.random.default_rng(0).normal(5, 2, (20, 24)).astype(np.float32), path, (1.0, 1.0))
    item = {"image": str(path), "label": 1}
    out = classification_eval_transforms((24, 20))(item)  # MONAI order (x, y); per-image z-score
    assert abs(float(out["image"].mean())) < 1e-5 and abs(float(out["image"].std(unbiased=False)) - 1) < 1e-4
    out = classification_eval_transforms((16, 16))(item)
    assert tuple(out["image"].shape) == (1, 16, 16) and out["label"] == 1
    train = classification_train_transforms((16, 16))
    a = train.set_random_state(7)(item)["image"]
    b = train.set_random_state(7)(item)["image"]
    c = train.set_random_state(8)(item)["image"]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
