"""Classification evaluation against scikit-learn's metrics; CSV formats and bad input."""
import csv
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medmamba.cli import main
from medmamba.evaluation.classification import evaluate_classification, roc_curve

CLASSES = ["round", "elongated", "ring", "spots"]


def write_csvs(folder, y_true, probs, classes, pred=None):
    cases = [f"c{i:03d}" for i in range(len(y_true))]
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", *(f"prob_{c}" for c in classes), *(["pred"] if pred is not None else [])])
        for i, case in enumerate(cases):
            w.writerow([case, *probs[i], *([classes[pred[i]]] if pred is not None else [])])
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "label"])
        w.writerows((case, classes[y]) for case, y in zip(cases, y_true))
    return folder / "predictions.csv", folder / "labels.csv"


def softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_multiclass_matches_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    probs = softmax(rng.normal(size=(60, 4)) + 1.5 * np.eye(4)[y])
    probs[:5] = probs[:5].round(1)  # ties in the scores
    probs /= probs.sum(1, keepdims=True)
    r = evaluate_classification(*write_csvs(tmp_path, y, probs, CLASSES))["summary"]
    yp = probs.argmax(1)
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, yp), abs=1e-12)
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, yp), abs=1e-12)
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, yp, average="macro"), abs=1e-12)
    assert r["macro_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-9)
    prec = skm.precision_score(y, yp, average=None)
    rec = skm.recall_score(y, yp, average=None)
    for k, c in enumerate(CLASSES):
        assert r["per_class"][c]["precision"] == pytest.approx(prec[k], abs=1e-12)
        assert r["per_class"][c]["recall"] == pytest.approx(rec[k], abs=1e-12)
        assert r["per_class"][c]["auc"] == pytest.approx(skm.roc_auc_score(y == k, probs[:, k]), abs=1e-9)
    assert r["confusion_matrix"] == skm.confusion_matrix(y, yp).tolist()
    fpr, tpr, _ = skm.roc_curve(y == 0, probs[:, 0], drop_intermediate=False)
    ours = roc_curve(probs[:, 0], y == 0)
    np.testing.assert_allclose(ours[0], fpr, atol=1e-12)
    np.testing.assert_allclose(ours[1], tpr, atol=1e-12)


def test_binary_pred_column_and_missing_class(tmp_path):
    """Explicit predictions; a class never in the labels nor predicted (left out of macro F1 as sklearn does)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 30)
    p1 = np.clip(0.3 * y + rng.random(30) * 0.7, 0, 1)
    probs = np.stack([1 - p1, p1, np.zeros(30)], 1)
    pred = (p1 > 0.6).astype(int)
    r = evaluate_classification(*write_csvs(tmp_path, y, probs, ["a", "b", "c"], pred))["summary"]
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["macro_auc"] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-9)
    assert math.isnan(r["per_class"]["c"]["auc"]) and math.isnan(r["per_class"]["c"]["precision"])


def test_cli_outputs(tmp_path):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 20)
    pred_csv, labels_csv = write_csvs(tmp_path, y, softmax(rng.normal(size=(20, 4))), CLASSES)
    out = tmp_path / "out"
    assert main(["evaluate", "cls", "--pred", str(pred_csv), "--ref", str(labels_csv), "-o", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["task"] == "classification" and len(data["cases"]) == 20
    assert data["summary"]["n"] == 20 and set(data["summary"]["per_class"]) == set(CLASSES)
    with open(out / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 20
    for name in ("confusion_matrix.png", "roc_curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "balanced accuracy" in (out / "report.md").read_text()


@pytest.mark.parametrize("problem", ["unknown_id", "missing_case", "unknown_class", "bad_prob", "no_probs"])
def test_bad_input(tmp_path, capsys, problem):
    y = np.array([0, 1, 1, 0])
    pred_csv, labels_csv = write_csvs(tmp_path, y, np.full((4, 2), 0.5), ["a", "b"])
    text = labels_csv.read_text()
    if problem == "unknown_id":
        labels_csv.write_text(text + "zzz,a\n")
        culprit, expected = labels_csv, "zzz"
    elif problem == "missing_case":
        labels_csv.write_text("\n".join(text.splitlines()[:-1]) + "\n")
        culprit, expected = pred_csv, "c003"
    elif problem == "unknown_class":
        labels_csv.write_text(text.replace("c000,a", "c000,q"))
        culprit, expected = labels_csv, "q"
    elif problem == "bad_prob":
        pred_csv.write_text(pred_csv.read_text().replace("c001,0.5", "c001,abc"))
        culprit, expected = pred_csv, "c001"
    else:
        pred_csv.write_text("case,score\nc000,1\n")
        culprit, expected = pred_csv, "prob_"
    out = tmp_path / "out"
    assert main(["evaluate", "cls", "--pred", str(pred_csv), "--ref", str(labels_csv), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(culprit) in err and expected in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))
