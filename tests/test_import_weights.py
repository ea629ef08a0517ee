"""``medmamba import-weights`` / ``medmamba.import_weights`` and ``medmamba import-nnunet`` on checkpoints written
here with the official key names and layouts (tests/data/official_keys, recorded from bowang-lab/U-Mamba)."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import official_state_dict
from official import build_ours
from safetensors.torch import load_file

import medmamba
from medmamba.cli import main
from medmamba.errors import MedMambaError
from medmamba.weights import Converted, convert_state_dict, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

FIXTURE = json.loads((ROOT / "tests" / "data" / "official_keys" / "umamba_bot.json").read_text(encoding="utf-8"))
CASE = FIXTURE["cases"]["nnU-Net 3d_fullres plan"]
SPEC = CASE["ours"]["nnunet"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official():
    return official_state_dict(CASE, scale=0.05)  # small, so that the network's outputs stay finite


@pytest.fixture
def plan_preset(monkeypatch):
    """The fixture's 3d_fullres plan as a preset of umamba_bot, so that the CLI builds the plan's network."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medmamba.networks.plans import plan_kwargs

    manager = PlansManager(SPEC["plans"]).get_configuration(SPEC["configuration"])
    kwargs = plan_kwargs(manager.network_arch_init_kwargs, manager.network_arch_init_kwargs_req_import)
    kwargs.pop("spatial_dims")
    monkeypatch.setitem(medmamba.model_entry("umamba_bot").presets, "plan3d", kwargs)
    return ["--preset", "plan3d", "--spatial-dims", "3", "--in-channels", "2", "--num-classes", "3"]


def test_cli_writes_a_state_dict_that_loads_strictly(official, plan_preset, tmp_path, capsys):
    checkpoint, out = tmp_path / "official.pth", tmp_path / "ours.safetensors"
    torch.save({"state_dict": official, "epoch": 3}, checkpoint)
    assert main(["import-weights", "umamba_bot", str(checkpoint), "-o", str(out), *plan_preset]) == 0
    report = capsys.readouterr().out
    ours = build_ours("umamba_bot", CASE["ours"])
    assert f"loaded {len(ours.state_dict())} / {len(ours.state_dict())} tensors" in report
    assert "missing" not in report and "unused" not in report
    assert f"aliases accepted: {len(CASE['aliases'])} tensors held under two or more equal names" in report
    state = load_file(out)
    ours.load_state_dict(state, strict=True)
    assert torch.equal(state["encoder.0.stem.0.conv1.0.weight"], official["encoder.stem.0.conv1.weight"])
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


@pytest.mark.parametrize("container", ["bare", "model", "network_weights", "module. prefix"])
def test_state_dict_found_where_checkpoints_keep_it(official, container, tmp_path):
    state = {f"module.{k}": v for k, v in official.items()} if container == "module. prefix" else official
    checkpoint = tmp_path / "official.pth"
    torch.save(state if container in ("bare", "module. prefix") else {container: state, "optimizer": {}}, checkpoint)
    report = medmamba.import_weights("umamba_bot", checkpoint, model=build_ours("umamba_bot", CASE["ours"]))
    assert report.complete and not report.unused and report.loaded


def test_missing_and_mismatched_exit_1_and_write_nothing_unless_partial(official, plan_preset, tmp_path, capsys):
    dropped = "decoder.seg_layers.2.bias"
    checkpoint, out = tmp_path / "official.pth", tmp_path / "ours.safetensors"
    torch.save({k: v for k, v in official.items() if k != dropped}, checkpoint)
    args = ["import-weights", "umamba_bot", str(checkpoint), "-o", str(out)]
    wrong_classes = [*plan_preset[:-1], "4"]  # --num-classes 4
    assert main([*args, *wrong_classes]) == 1
    report = capsys.readouterr().out
    assert "missing (ours): decoder.heads.0.bias" in report
    assert "shape mismatch: decoder.heads.1.weight: checkpoint (3, 64, 1, 1, 1), ours (4, 64, 1, 1, 1)" in report
    assert "nothing written" in report and not out.exists()
    assert main([*args, *plan_preset, "--allow-partial"]) == 0
    assert "decoder.heads.0.bias" not in load_file(out) and "decoder.heads.0.weight" in load_file(out)
    assert main([*args, *plan_preset, "--allow-partial"]) == 2  # the file exists now
    assert main([*args, *plan_preset, "--allow-partial", "--overwrite"]) == 0


def test_unused_tensors_are_reported_not_errors(official):
    extra = {**official, "decoder.encoder.relative_position_index": torch.arange(4)}
    report = medmamba.import_weights("umamba_bot", extra, model=build_ours("umamba_bot", CASE["ours"]))
    assert report.complete and report.unused == ["decoder.encoder.relative_position_index"]


def test_aliases_with_different_values_name_both(official, tmp_path, capsys):
    checkpoint = tmp_path / "official.pth"
    state = dict(official)
    state["decoder.encoder.stem.0.conv1.weight"] = state["encoder.stem.0.conv1.weight"] + 1
    torch.save(state, checkpoint)
    assert main(["import-weights", "umamba_bot", str(checkpoint), "-o", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'encoder.stem.0.conv1.weight'" in err and "'decoder.encoder.stem.0.conv1.weight'" in err


class NotATensor:
    pass


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    (b"epoch 3, dice 0.9\n", "not a PyTorch checkpoint"),
    (NotATensor(), "weights_only=True"),
    ({"epoch": 3, "lr": 0.01}, "no state dict in it"),
])
def test_bad_checkpoints_get_one_line_exit_2_and_nothing_written(content, problem, tmp_path, capsys):
    checkpoint, out = tmp_path / "official.pth", tmp_path / "ours.safetensors"
    if isinstance(content, bytes):
        checkpoint.write_bytes(content)
    elif content is not None:
        torch.save(content, checkpoint)
    assert main(["import-weights", "umamba_bot", str(checkpoint), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(checkpoint) in err and problem in err, err
    assert not out.exists()


def test_no_object_is_rebuilt_from_a_pickle(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    checkpoint = tmp_path / "evil.pth"
    with open(checkpoint, "wb") as f:
        pickle.dump({"state_dict": Boom()}, f)
    with pytest.raises(MedMambaError, match="weights_only=True"):
        load_checkpoint(checkpoint)


def test_nnunet_numpy_scalars_load_with_weights_only(tmp_path):
    checkpoint = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.ones(1)}, "_best_ema": np.float64(0.5),
                "logging": {"mean_fg_dice": [np.float32(0.25)], "epochs": [np.int64(1)]}}, checkpoint)
    loaded = load_checkpoint(checkpoint)
    assert loaded["_best_ema"] == 0.5 and loaded["logging"]["mean_fg_dice"] == [0.25]


def test_entry_without_filter_takes_its_own_keys(monkeypatch):
    monkeypatch.setattr(medmamba.model_entry("umamba_bot"), "checkpoint_filter", None)
    net = medmamba.create_model("umamba_bot", preset="tiny")
    report = convert_state_dict("umamba_bot", net.state_dict(), net)
    assert report.complete and not report.unused and not report.aliases


def test_converted_accepts_equal_aliases_only():
    out = Converted()
    out.put("w", torch.ones(2), "a")
    out.put("w", torch.ones(2), "b")
    assert out.sources["w"] == ["a", "b"]
    with pytest.raises(MedMambaError, match="'a' and 'c' both give 'w'"):
        out.put("w", torch.zeros(2), "c")


# ---------------------------------------------------------------------------------------------------------------
# import-nnunet: a results folder as U-Mamba's forked nnU-Net leaves it


def umamba_results(root: Path, official: dict) -> Path:
    """nnUNet_results/Dataset999_Equivalence/nnUNetTrainerUMambaBot__nnUNetPlans__3d_fullres with fold 0, as the
    fork writes it (2.2-format plans, checkpoint with numpy scalars in its log, the fork's init_args)."""
    folder = root / "Dataset999_Equivalence" / f"nnUNetTrainerUMambaBot__nnUNetPlans__{SPEC['configuration']}"
    (folder / "fold_0" / "validation").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(SPEC["plans"]), encoding="utf-8")
    (folder / "dataset.json").write_text(json.dumps(SPEC["dataset_json"]), encoding="utf-8")
    (folder / "dataset_fingerprint.json").write_text("{}", encoding="utf-8")
    (folder / "fold_0" / "validation" / "summary.json").write_text('{"foreground_mean": {"Dice": 0.8}}')
    (folder / "fold_0" / "training_log.txt").write_text("epoch 0\n")
    n_params = len(official) - sum(len(names) - 1 for names in CASE["aliases"])
    torch.save({
        "network_weights": official,
        "optimizer_state": {"state": {0: {"momentum_buffer": torch.zeros(1)}}, "param_groups": [
            {"lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-05, "initial_lr": 0.01,
             "params": list(range(n_params))}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.7)], "ema_fg_dice": [np.float64(0.7)], "lrs": [0.01]},
        "_best_ema": np.float64(0.7), "current_epoch": 1,
        "init_args": {"plans": SPEC["plans"], "configuration": SPEC["configuration"], "fold": 0,
                      "dataset_json": SPEC["dataset_json"], "unpack_dataset": True, "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainerUMambaBot", "inference_allowed_mirroring_axes": (0, 1, 2),
    }, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_import_nnunet_results_predict_with_stock_nnunet(official, tmp_path, capsys):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    source = umamba_results(tmp_path / "umamba_results", official)
    out = tmp_path / "nnUNet_results"
    assert main(["import-nnunet", str(source.parents[1]), "-o", str(out)]) == 0
    folder = out / "Dataset999_Equivalence" / f"UMambaBotTrainer__nnUNetPlans__{SPEC['configuration']}"
    assert f"wrote {folder} (fold_0)" in capsys.readouterr().out
    assert json.loads((folder / "plans.json").read_text()) == SPEC["plans"]
    assert (folder / "fold_0" / "validation" / "summary.json").is_file()
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)  # no numpy left
    assert checkpoint["trainer_name"] == "UMambaBotTrainer" and "unpack_dataset" not in checkpoint["init_args"]
    assert checkpoint["optimizer_state"]["state"] == {}
    assert checkpoint["optimizer_state"]["param_groups"][0]["momentum"] == 0.99

    predictor = nnUNetPredictor(tile_step_size=1.0, use_gaussian=False, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,),
                                                   checkpoint_name="checkpoint_final.pth")
    assert type(predictor.network).__name__ == "SegUNet"
    weights = predictor.list_of_parameters[0]
    assert torch.equal(weights["decoder.heads.0.weight"], official["decoder.seg_layers.2.weight"])
    patch = SPEC["plans"]["configurations"][SPEC["configuration"]]["patch_size"]
    image = np.random.default_rng(0).standard_normal((2, *patch)).astype(np.float32)
    segmentation = predictor.predict_single_npy_array(image, {"spacing": [1.0, 1.0, 1.0]})
    assert segmentation.shape == tuple(patch) and set(np.unique(segmentation)) <= {0, 1, 2}

    assert main(["import-nnunet", str(source), "-o", str(out)]) == 0  # its own earlier output: replaced
    (folder / "notes.txt").write_text("mine")
    assert main(["import-nnunet", str(source), "-o", str(out)]) == 2  # a file it did not write: refused
    assert "notes.txt" in capsys.readouterr().err
    assert main(["import-nnunet", str(source), "-o", str(out), "--overwrite"]) == 0
    assert (folder / "notes.txt").read_text() == "mine"


def test_model_arguments_that_do_not_fit_get_one_line(official, tmp_path, capsys):
    checkpoint = tmp_path / "official.pth"
    torch.save(official, checkpoint)
    assert main(["import-weights", "umamba_bot", str(checkpoint), "-o", str(tmp_path / "o.safetensors"),
                 "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no preset 'huge'" in err
