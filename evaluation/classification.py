"""Classification metrics from a predictions CSV and a labels CSV (numpy, with MONAI's ROC AUC).

Inputs
    ``predictions.csv``: ``case``, one ``prob_<class>`` column per class (class order = column order) and an
    optional ``pred`` column (a class name); without ``pred`` the prediction is the class of highest probability.
    ``labels.csv``: ``case,label`` with ``label`` a class name. Both files must hold the same cases.

Metrics (C = classes from the ``prob_`` columns; conventions as scikit-learn's)
    - ``accuracy``; ``balanced_accuracy`` = mean recall over the classes present in the labels.
    - per class: ``precision`` = tp/(tp+fp) (NaN when never predicted), ``recall`` = tp/(tp+fn) (NaN when absent
      from the labels), ``f1`` = 2tp/(2tp+fp+fn), ``support``, ``auc``.
    - ``macro_f1``: mean F1 over the classes that occur in the labels or the predictions.
    - ``auc`` per class: one-vs-rest ROC AUC of ``prob_<class>`` (``monai.metrics.compute_roc_auc``), NaN when
      the class is absent from the labels or is every label; ``macro_auc`` = mean of the defined ones (for two
      classes with probabilities summing to 1 both per-class AUCs equal the usual binary AUC).
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from medmamba.errors import MedMambaError
from medmamba.evaluation import report
from medmamba.io_utils import atomic_dir

PROB_PREFIX = "prob_"


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MedMambaError(f"{path}: unreadable CSV ({err})") from None
    missing = [c for c in required if c not in fields]
    if missing:
        raise MedMambaError(f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(fields) or 'none'})")
    if not rows:
        raise MedMambaError(f"{path}: no rows")
    duplicates = sorted(c for c, n in Counter(r["case"] for r in rows).items() if n > 1)
    if duplicates:
        raise MedMambaError(f"{path}: duplicate case(s) {', '.join(duplicates[:5])}")
    return rows


def read_predictions(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, str] | None]:
    """(class names, case -> probabilities, case -> predicted class or None)."""
    rows = _read_csv(path, ("case",))
    fields = list(rows[0])
    classes = [c[len(PROB_PREFIX):] for c in fields if c.startswith(PROB_PREFIX)]
    if len(classes) < 2:
        raise MedMambaError(f"{path}: need a {PROB_PREFIX}<class> column per class (at least two)")
    probs = {}
    for row in rows:
        try:
            p = np.array([float(row[PROB_PREFIX + c]) for c in classes])
        except (TypeError, ValueError):
            raise MedMambaError(f"{path}: case {row['case']}: probabilities must be numbers") from None
        if not np.isfinite(p).all():
            raise MedMambaError(f"{path}: case {row['case']}: non-finite probability")
        probs[row["case"]] = p
    preds = None
    if "pred" in fields:
        preds = {r["case"]: r["pred"] for r in rows}
        unknown = sorted({p for p in preds.values() if p not in classes})
        if unknown:
            raise MedMambaError(f"{path}: pred column has unknown class(es) {', '.join(unknown[:5])} "
                                f"(classes: {', '.join(classes)})")
    return classes, probs, preds


def read_labels(path: Path, classes: list[str]) -> dict[str, str]:
    """case -> class name from a ``case,label`` CSV.

    Args:
        path: the labels CSV.
        classes: the class names of the predictions' ``prob_`` columns; every label must be one of them.

    Raises:
        MedMambaError: unreadable, missing columns, no rows, a case twice, or a label not in ``classes``.
    """
    rows = _read_csv(path, ("case", "label"))
    labels = {r["case"]: r["label"] for r in rows}
    unknown = sorted({v for v in labels.values() if v not in classes})
    if unknown:
        raise MedMambaError(f"{path}: unknown class label(s) {', '.join(unknown[:5])} (classes from the "
                            f"prediction columns: {', '.join(classes)})")
    return labels


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """One-vs-rest ROC AUC through MONAI; NaN when only one kind of label is present."""
    if positive.all() or not positive.any():
        return math.nan
    import torch
    from monai.metrics import compute_roc_auc

    return float(compute_roc_auc(torch.as_tensor(scores, dtype=torch.float64),
                                 torch.as_tensor(positive, dtype=torch.float64)))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False/true positive rates at every distinct threshold (for plotting)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order].astype(float)
    last_of_tie = np.r_[np.diff(s) != 0, True]
    tps, fps = np.cumsum(y)[last_of_tie], np.cumsum(1 - y)[last_of_tie]
    return np.r_[0, fps / max(fps[-1], 1)], np.r_[0, tps / max(tps[-1], 1)]


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def classification_metrics(classes: list[str], y_true: np.ndarray, y_pred: np.ndarray,
                           probs: np.ndarray) -> dict[str, Any]:
    """Summary metrics for integer class indices ``y_true``/``y_pred`` and probabilities ``probs`` (N, C)."""
    n_classes = len(classes)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for k, name in enumerate(classes):
        tp = confusion[k, k]
        fp = confusion[:, k].sum() - tp
        fn = confusion[k, :].sum() - tp
        per_class[name] = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "support": int(tp + fn),
            "auc": roc_auc(probs[:, k], y_true == k),
        }
    present = [c for k, c in enumerate(classes) if confusion[k, :].sum() > 0]
    occurring = [c for k, c in enumerate(classes) if confusion[k, :].sum() + confusion[:, k].sum() > 0]
    aucs = [per_class[c]["auc"] for c in classes if not math.isnan(per_class[c]["auc"])]
    return {
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "balanced_accuracy": float(np.mean([per_class[c]["recall"] for c in present])),
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in occurring])),
        "macro_auc": float(np.mean(aucs)) if aucs else math.nan,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "n": int(confusion.sum()),
    }


def evaluate_classification(pred_csv, labels_csv) -> dict[str, Any]:
    """Score a predictions CSV against a labels CSV (formats and metrics in the module docstring).

    Args:
        pred_csv: ``case``, ``prob_<class>`` columns and an optional ``pred`` column.
        labels_csv: ``case,label``.

    Returns:
        ``{"task": "classification", "cases": [one row per case, sorted], "summary": classification_metrics(...),
        "meta": {...}}``.

    Raises:
        MedMambaError: a malformed file, or cases that are in one file and not the other.
    """
    pred_csv, labels_csv = Path(pred_csv), Path(labels_csv)
    classes, probs, preds = read_predictions(pred_csv)
    labels = read_labels(labels_csv, classes)
    unknown = sorted(set(labels) - set(probs))
    if unknown:
        raise MedMambaError(f"{labels_csv}: {len(unknown)} case id(s) not in {pred_csv.name}: "
                            + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    unlabelled = sorted(set(probs) - set(labels))
    if unlabelled:
        raise MedMambaError(f"{pred_csv}: {len(unlabelled)} case id(s) not in {labels_csv.name}: "
                            + ", ".join(unlabelled[:5]) + (" ..." if len(unlabelled) > 5 else ""))
    cases = sorted(labels)
    index = {c: k for k, c in enumerate(classes)}
    p = np.stack([probs[c] for c in cases])
    y_true = np.array([index[labels[c]] for c in cases])
    y_pred = np.array([index[preds[c]] for c in cases]) if preds else p.argmax(1)
    summary = classification_metrics(classes, y_true, y_pred, p)
    rows = [{"case": c, "label": labels[c], "pred": classes[y_pred[i]], "correct": bool(y_true[i] == y_pred[i]),
             **{PROB_PREFIX + k: float(p[i, j]) for j, k in enumerate(classes)}} for i, c in enumerate(cases)]
    meta = {"predictions": str(pred_csv.resolve()), "labels": str(labels_csv.resolve()), "classes": classes,
            "prediction_source": "pred column" if preds else "argmax of probabilities",
            "auc_implementation": "monai.metrics.compute_roc_auc, one-vs-rest per class"}
    return {"task": "classification", "cases": rows, "summary": summary, "meta": meta}


def _plot_confusion(path: Path, classes: list[str], confusion: np.ndarray) -> None:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 1.0 + 0.8 * len(classes)))
    ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v <= confusion.max() / 2 else "white")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_roc(path: Path, classes: list[str], y_true: np.ndarray, probs: np.ndarray, per_class: dict) -> None:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k, name in enumerate(classes):
        if not math.isnan(per_class[name]["auc"]):
            fpr, tpr = roc_curve(probs[:, k], y_true == k)
            ax.plot(fpr, tpr, label=f"{name} (AUC {per_class[name]['auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_classification_outputs(result: dict[str, Any], out_dir, overwrite: bool = False) -> Path:
    """Write metrics.json, metrics.csv, report.md, confusion_matrix.png and roc_curves.png into ``out_dir``.

    The folder is written whole or not at all (``atomic_dir``).

    Args:
        result: what :func:`evaluate_classification` returned.
        out_dir: the output folder.
        overwrite: write into a folder that holds files ``evaluate cls`` did not write (they are kept).

    Returns:
        ``out_dir``.
    """
    classes = result["meta"]["classes"]
    summary = result["summary"]
    index = {c: k for k, c in enumerate(classes)}
    y_true = np.array([index[r["label"]] for r in result["cases"]])
    probs = np.array([[r[PROB_PREFIX + c] for c in classes] for r in result["cases"]])
    columns = ["case", "label", "pred", "correct", *(PROB_PREFIX + c for c in classes)]
    with atomic_dir(out_dir, "evaluate cls", overwrite) as tmp:
        _plot_confusion(tmp / "confusion_matrix.png", classes, np.array(summary["confusion_matrix"]))
        _plot_roc(tmp / "roc_curves.png", classes, y_true, probs, summary["per_class"])
        per_class = [(c, m["precision"], m["recall"], m["f1"], m["auc"], m["support"])
                     for c, m in summary["per_class"].items()]
        md = [
            "# Classification evaluation", "",
            f"{summary['n']} cases, classes {', '.join(classes)}; prediction = {result['meta']['prediction_source']}.",
            "",
            report.markdown_table(["accuracy", "balanced accuracy", "macro F1", "macro ROC AUC (one-vs-rest)"],
                                  [(summary["accuracy"], summary["balanced_accuracy"], summary["macro_f1"],
                                    summary["macro_auc"])]), "",
            "## Per class", "", report.markdown_table(["class", "precision", "recall", "F1", "AUC", "support"],
                                                      per_class), "",
            "## Figures", "", "![confusion matrix](confusion_matrix.png)", "", "![ROC curves](roc_curves.png)", "",
        ]
        report.write_outputs(tmp, result, columns, "\n".join(md))
    return Path(out_dir)
