"""The demo's self-contained HTML report: every picture embedded, every number read from the run's outputs."""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from medmamba.export.export import load_checkpoint  # noqa: E402
from medmamba.io_utils import atomic_file  # noqa: E402

SEG_METRICS = ("dice", "hd95", "nsd")
DICE_TOLERANCE = 0.05

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b2631}
h1{color:#00695c} h2{border-bottom:2px solid #b2dfdb;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccd;padding:.3em .7em;text-align:right}
th{background:#e0f2f1} td:first-child,th:first-child{text-align:left} img{max-width:100%}
.ok{color:#1b5e20;font-weight:bold} .warn{color:#b71c1c;font-weight:bold} .note{color:#555}
"""


def png(fig) -> str:
    """A matplotlib figure as an ``<img>`` tag with the PNG inline (base64); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def png_file(path: Path) -> str:
    """A PNG file as an ``<img>`` tag with the image inline (base64), its stem as alt text."""
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" alt="{path.stem}">'


def fmt(value) -> str:
    """A table cell: floats to 4 significant digits, None or NaN as "n/a", anything else HTML-escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table: ``header`` then one row per list, cells formatted by :func:`fmt`."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def seg_summary(demo) -> tuple[str, dict]:
    """The segmentation harness's per-label means (Dice, HD95, NSD) for every trainer.

    Args:
        demo: the running :class:`medmamba.demo.pipeline.Demo` (reads ``evaluation/<trainer>/metrics.json``).

    Returns:
        The HTML table, and each trainer's Dice averaged over the foreground labels (NaN-skipping).
    """
    summaries = {t: json.loads((demo.out / "evaluation" / t / "metrics.json").read_text(encoding="utf-8"))["summary"]
                 for t in demo.seg["trainers"]}
    labels = sorted({label for s in summaries.values() for label in s})
    rows, mean_dice = [], {}
    for t, summary in summaries.items():
        for label in labels:
            rows.append([t, label] + [summary[label][m]["mean"] for m in SEG_METRICS])
        mean_dice[t] = float(np.nanmean([summary[label]["dice"]["mean"] for label in labels]))
    header = ["trainer", "label"] + [f"mean {m}" for m in SEG_METRICS]
    return table(header, rows), mean_dice


def seg_cases(demo) -> str:
    """Per held-out case and label, every trainer's Dice, HD95 and NSD side by side."""
    trainers = demo.seg["trainers"]
    per = {t: {(c["case"], c["label"]): c for c in json.loads(
        (demo.out / "evaluation" / t / "metrics.json").read_text(encoding="utf-8"))["cases"]} for t in trainers}
    keys = sorted(per[trainers[0]])
    header = ["case", "label"] + [f"{t} {m}" for m in SEG_METRICS for t in trainers]
    rows = [[case, label] + [per[t].get((case, label), {}).get(m) for m in SEG_METRICS for t in trainers]
            for case, label in keys]
    return table(header, rows)


def dice_verdict(mean_dice: dict) -> str:
    """A paragraph comparing the first trainer (the Mamba one) with the second (the baseline): "ok" when its mean
    Dice is at most ``DICE_TOLERANCE`` below, a warning otherwise; empty with fewer than two trainers."""
    names = list(mean_dice)
    if len(names) < 2:
        return ""
    mamba, baseline = names[0], names[1]
    gap = mean_dice[mamba] - mean_dice[baseline]
    within = abs(gap) <= DICE_TOLERANCE or gap > 0
    css = "ok" if within else "warn"
    text = (f"Mean foreground Dice: {mamba} {mean_dice[mamba]:.3f}, {baseline} {mean_dice[baseline]:.3f} "
            f"(difference {gap:+.3f}; target: {mamba} no more than {DICE_TOLERANCE} below {baseline}).")
    if not within:
        text += (" At this very short CPU budget the state-space network has seen too few iterations to catch up "
                 "with the plain CNN; raise `epochs` in the configuration to close the gap.")
    return f'<p class="{css}">{html.escape(text)}</p>'


def training_curves(demo) -> str:
    """Each trainer's nnU-Net training and validation loss and pseudo Dice per epoch, from its final checkpoint's
    log, as an ``<img>`` tag."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for t in demo.seg["trainers"]:
        ckpt = demo.results_folder(t) / f"fold_{demo.seg['fold']}" / "checkpoint_final.pth"
        log = load_checkpoint(ckpt)["logging"]
        epochs = np.arange(1, len(log["train_losses"]) + 1)
        axes[0].plot(epochs, log["train_losses"], label=f"{t} train")
        axes[0].plot(epochs, log["val_losses"], "--", label=f"{t} val")
        axes[1].plot(epochs, log["mean_fg_dice"], label=t)
    axes[0].set(xlabel="epoch", ylabel="loss", title="nnU-Net loss (Dice + CE)")
    axes[1].set(xlabel="epoch", ylabel="pseudo Dice", title="validation pseudo Dice", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return png(fig)


def read(path: Path) -> np.ndarray:
    """An image's voxels as SimpleITK gives them, axes reversed (z, y, x)."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def overlays(demo, max_cases: int = 3) -> str:
    """For the first ``max_cases`` held-out images, the axial slice with the most reference foreground: the
    reference and each trainer's prediction over the image, as an ``<img>`` tag."""
    images = sorted((demo.raw / "imagesTs").glob("*_0000.nii.gz"))[:max_cases]
    trainers = demo.seg["trainers"]
    fig, axes = plt.subplots(len(images), 1 + len(trainers), figsize=(3.2 * (1 + len(trainers)), 3.2 * len(images)),
                             squeeze=False)
    for row, image_path in zip(axes, images):
        case = image_path.name.removesuffix("_0000.nii.gz")
        image, ref = read(image_path), read(demo.raw / "labelsTs" / f"{case}.nii.gz")
        z = int(np.argmax((ref > 0).sum(axis=(1, 2))))
        panels = [("reference", ref)] + [(t, read(demo.out / "predictions" / t / f"{case}.nii.gz")) for t in trainers]
        for ax, (title, seg) in zip(row, panels):
            ax.imshow(image[z], cmap="gray")
            masked = np.ma.masked_equal(seg[z], 0)
            ax.imshow(masked, cmap="tab10", vmin=0, vmax=9, alpha=0.45, interpolation="nearest")
            ax.set_title(f"{case} · {title}", fontsize=9)
            ax.axis("off")
    return png(fig)


def classification_section(folder: Path) -> str:
    """The harness's figures beside chance: 1 / classes (balanced accuracy) and the majority class's share."""
    result = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    summary, classes = result["summary"], result["meta"]["classes"]
    counts = [sum(c["label"] == k for c in result["cases"]) for k in classes]
    chance, majority = 1 / len(classes), max(counts) / max(sum(counts), 1)
    verdict = summary["balanced_accuracy"] > chance
    note = (f"<p class='{'ok' if verdict else 'warn'}'>Chance level: balanced accuracy {chance:.3f} ({len(classes)} "
            f"classes); always predicting the most frequent class scores accuracy {majority:.3f}. "
            + ("The classifier beats chance." if verdict else "The classifier does not beat chance at this budget.")
            + "</p>")
    return eval_section(folder, ["accuracy", "balanced_accuracy", "macro_f1", "macro_auc"]) + note


def restoration_section(demo) -> str:
    """Restored and degraded input against the clean images, same metrics: a restorer must beat its input."""
    run = demo.out / "restoration"
    restored = json.loads((run / "evaluation" / "metrics.json").read_text(encoding="utf-8"))["summary"]["all"]
    inputs = json.loads((run / "evaluation_inputs" / "metrics.json").read_text(encoding="utf-8"))["summary"]["all"]
    better = {"psnr": lambda a, b: a > b, "ssim": lambda a, b: a > b, "nmse": lambda a, b: a < b}
    rows = [[m, inputs[m]["mean"], restored[m]["mean"], "yes" if better[m](restored[m]["mean"], inputs[m]["mean"])
             else "no"] for m in better]
    beats = all(r[3] == "yes" for r in rows)
    note = (f"<p class='{'ok' if beats else 'warn'}'>"
            + ("The restored images beat the degraded inputs on every metric." if beats else
               "Failure: the restored images do not beat the degraded inputs on every metric at this budget.")
            + "</p>")
    pictures = "".join(png_file(p) for p in sorted((run / "evaluation").glob("*.png")))
    return table(["metric", "degraded input", "restored", "restored better"], rows) + note + pictures


def eval_section(folder: Path, keys: list[str]) -> str:
    """The harness's summary values for ``keys`` (means when summarised per case), then its plots."""
    summary = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["summary"]
    rows = [[k, summary[k]["mean"] if isinstance(summary[k], dict) else summary[k]] for k in keys]
    pictures = "".join(png_file(p) for p in sorted(folder.glob("*.png")))
    return table(["metric", "value"], rows) + pictures


def restoration_pictures(demo, max_cases: int = 3) -> str:
    """Degraded, restored and clean image side by side for the first ``max_cases`` test cases, as an ``<img>``
    tag."""
    run = demo.out / "restoration" / "train"
    clean = {p.name.split(".")[0]: p for p in (demo.out / "data" / "restoration" / "test" / "clean").glob("*.nii.gz")}
    cases = sorted((run / "predictions").glob("*.nii.gz"))[:max_cases]
    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases)), squeeze=False)
    for row, pred in zip(axes, cases):
        for ax, (title, path) in zip(row, [("degraded", run / "inputs" / pred.name), ("restored", pred),
                                           ("clean", clean[pred.name.split(".")[0]])]):
            ax.imshow(np.squeeze(read(path)), cmap="gray")
            ax.set_title(f"{pred.name.split('.')[0]} · {title}", fontsize=9)
            ax.axis("off")
    return png(fig)


def efficiency_table(demo) -> str:
    """Parameters, FLOPs, latency and peak memory per trainer's network, from the demo's ``efficiency.json``."""
    eff = json.loads((demo.out / "efficiency.json").read_text(encoding="utf-8"))
    keys = ["params", "flops", "latency_ms", "peak_memory_mb"]
    rows = [[name] + [row.get(k) for k in keys] for name, row in eff["networks"].items()]
    return (f"<p>Networks as the trainers build them from the demo's plans, input {tuple(eff['input_shape'])}, "
            f"on {demo.cfg['device']}.</p>" + table(["trainer"] + keys, rows))


def write_report(demo) -> Path:
    """Write the demo's ``report.html`` (atomically) from the run's outputs; returns its path."""
    seg_table, mean_dice = seg_summary(demo)
    state = json.loads((demo.out / "demo_state.json").read_text(encoding="utf-8"))
    seg = demo.seg
    sections = [
        f"<h1>medmamba demo report</h1><p class='note'>Phantom dataset {html.escape(demo.dataset)}: "
        f"{seg['n_train']} training and {seg['n_test']} held-out cases of {tuple(seg['shape'])} voxels, spacing "
        f"{tuple(seg['spacing'])} mm. nnU-Net {seg['configuration']}, fold {seg['fold']}, each trainer "
        f"{seg['epochs']} epochs × {seg['iterations_per_epoch']} iterations on {demo.cfg['device']}.</p>",
        "<h2>Segmentation on held-out cases</h2>", seg_table, dice_verdict(mean_dice),
        "<h3>Per case</h3>", seg_cases(demo),
        "<h2>Training curves</h2>", training_curves(demo),
        "<h2>Predictions beside the reference</h2>", overlays(demo),
        "<h2>Efficiency</h2>", efficiency_table(demo),
        f"<h2>Classification ({html.escape(demo.cfg['classification']['model'])})</h2>",
        classification_section(demo.out / "classification" / "evaluation"),
        f"<h2>Restoration ({html.escape(demo.cfg['restoration']['model'])}, "
        f"{html.escape(demo.cfg['restoration']['degradation'])} degradation)</h2>",
        restoration_section(demo), restoration_pictures(demo),
        "<h2>3D Slicer</h2><p>Model package and segmentation: "
        + ", ".join(html.escape(p.name) for p in sorted((demo.out / "slicer").iterdir())) + "</p>",
        "<h2>Run time per step (s)</h2>", table(["step", "seconds"], [[k, v] for k, v in state["done"].items()]),
    ]
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>medmamba demo</title><style>{CSS}</style>"
           f"</head><body>{''.join(sections)}</body></html>")
    target = demo.out / "report.html"
    with atomic_file(target, suffix=".html") as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return target
