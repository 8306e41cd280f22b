"""Metrics, reports (Markdown + JSON) and plots for a classifier's predictions; no model code in here.

Everything takes plain arrays (labels, probabilities, class names, file paths) so it works for any model, a saved
run or a notebook. Plots use matplotlib's Agg backend and stay readable with 120 classes by showing only the
breeds involved in the most confusions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write, atomic_write_text, writing


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig: Any, path: Path) -> Path:
    """Save atomically so a crash never leaves half a PNG."""
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        _plt().close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """cm[i, j] = photos of class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def topk_accuracy(y_true: Sequence[int], probs: np.ndarray, k: int) -> float:
    y = np.asarray(y_true)
    if len(y) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str],
                    paths: Sequence[str] | None = None, top_confused: int = 15) -> dict[str, Any]:
    """Top-1/top-5, per-class precision/recall/F1/support, most confused pairs and the confusion matrix."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    c = len(class_names)
    pred = probs.argmax(1) if len(y) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y, pred, c)
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    # null where a figure is undefined (0/0): a breed with no photo has no recall, one never predicted no
    # precision; they had read 0.0, and a mean over per_class came out wrong
    def known(v: float, defined: bool) -> float | None:
        return round(float(v), 4) if defined else None

    per_class = [{"class": class_names[i], "precision": known(precision[i], predicted[i] > 0 or support[i] > 0),
                  "recall": known(recall[i], support[i] > 0), "f1": known(f1[i], support[i] > 0),
                  "support": int(support[i])} for i in range(c)]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:top_confused]
    pairs = []
    for flat in order:
        i, j = divmod(int(flat), c)
        if off[i, j] == 0:
            break
        pairs.append({"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j]),
                      "share_of_true": round(float(off[i, j] / max(support[i], 1)), 4)})
    present = support > 0
    miss = []
    if paths is not None:
        wrong = np.nonzero(pred != y)[0]
        # The most confident mistakes first: those say the most about what the model gets wrong.
        wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])] if len(wrong) else wrong
        miss = [{"path": str(paths[i]), "true": class_names[y[i]], "predicted": class_names[pred[i]],
                 "probability": round(float(probs[i, pred[i]]), 4),
                 "true_probability": round(float(probs[i, y[i]]), 4)} for i in wrong]
    return {
        "n": int(len(y)),
        "num_classes": c,
        "classes_present": int(present.sum()),
        "top1": round(topk_accuracy(y, probs, 1), 4) if len(y) else None,
        "top5": round(topk_accuracy(y, probs, 5), 4) if len(y) else None,
        "macro_precision": round(float(precision[present].mean()), 4) if present.any() else None,
        "macro_recall": round(float(recall[present].mean()), 4) if present.any() else None,
        "macro_f1": round(float(f1[present].mean()), 4) if present.any() else None,
        "per_class": per_class,
        "most_confused": pairs,
        "misclassified": miss,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


# ---------------------------------------------------------------------------------------------------------------
# Plots


def plot_confusion(metrics: dict[str, Any], path: str | Path, max_classes: int = 25) -> Path:
    """Row-normalised confusion matrix; with many classes only those in the most confusions are shown."""
    plt = _plt()
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    names = metrics["class_names"]
    c = len(names)
    if c > max_classes:
        off = cm.copy()
        np.fill_diagonal(off, 0)
        score = off.sum(0) + off.sum(1)
        keep = np.sort(np.argsort(-score, kind="stable")[:max_classes])
        title = f"Confusion matrix: the {len(keep)} of {c} breeds most involved in errors"
    else:
        keep = np.arange(c)
        title = "Confusion matrix"
    sub = cm[np.ix_(keep, keep)]
    support = cm.sum(1)[keep]
    norm = sub / np.maximum(support[:, None], 1)
    k = len(keep)
    size = max(5.0, 0.32 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [_short(names[i]) for i in keep]
    font = 9 if k <= 15 else 7
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=font)
    ax.set_yticks(range(k), [f"{lab} ({int(s)})" for lab, s in zip(labels, support, strict=True)], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true breed (photos)")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if sub[i, j]:
                    ax.text(j, i, int(sub[i, j]), ha="center", va="center", fontsize=font - 1,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(f"{title}\n({metrics['n']} photos, top-1 {metrics['top1']:.1%}; rows sum to 1)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="share of the true breed's photos")
    return _save_fig(fig, Path(path))


def plot_reliability(probs: np.ndarray, y_true: Sequence[int], path: str | Path, bins: int = 15,
                     title: str = "") -> Path:
    """Reliability diagram: accuracy against top-1 probability in equal-width bins, bar width = photo share."""
    plt = _plt()
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = pred == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(5.2, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    mids, accs, counts = [], [], []
    for b in range(bins):
        m = which == b
        if m.any():
            mids.append(conf[m].mean())
            accs.append(correct[m].mean())
            counts.append(int(m.sum()))
    ax.plot(mids, accs, "-o", ms=4, label="observed")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Reliability{': ' + title if title else ''}", fontsize=10)
    axn.bar(edges[:-1], np.bincount(which, minlength=bins), width=1 / bins, align="edge", color="#8aa", edgecolor="w")
    axn.set_xlabel("top-1 probability")
    axn.set_ylabel("photos")
    axn.set_xlim(0, 1)
    return _save_fig(fig, Path(path))


def _short(name: str, n: int = 22) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def plot_learning_curves(history: Sequence[dict[str, Any]], out_dir: str | Path,
                         title: str = "") -> list[Path]:
    """loss.png and accuracy.png: train vs val per epoch, the best epoch marked."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    out = Path(out_dir)
    paths = []
    epochs = [h["epoch"] for h in history]
    best = max(history, key=lambda h: (h.get("val_acc") or 0.0, -(h.get("val_loss") or 0.0)), default=None)
    for metric, label in (("loss", "cross-entropy loss"), ("acc", "top-1 accuracy")):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = [h.get(f"{split}_{metric}") for h in history]
            if any(v is not None for v in ys):
                ax.plot(epochs, [np.nan if v is None else v for v in ys], style, ms=3, label=split)
        if best is not None:
            ax.axvline(best["epoch"], color="grey", ls=":", lw=1, label=f"best epoch ({best['epoch']})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if metric == "acc":
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"{title} - {label}" if title else label, fontsize=10)
        paths.append(_save_fig(fig, out / f"{metric if metric == 'loss' else 'accuracy'}.png"))
    return paths


def plot_misclassified(misclassified: Sequence[dict[str, Any]], path: str | Path, n: int = 16,
                       cols: int = 4) -> Path | None:
    """A grid of the most confident mistakes, each captioned true / predicted (probability)."""
    from PIL import Image, ImageOps

    items = list(misclassified)[:n]
    if not items:
        return None
    plt = _plt()
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, it in zip(axes.flat, items, strict=False):
        try:
            with Image.open(it["path"]) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((256, 256))
                ax.imshow(np.asarray(im))
        except Exception:  # an unreadable photo still gets its caption
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
        ax.set_title(f"true: {_short(it['true'], 24)}\npred: {_short(it['predicted'], 24)} "
                     f"({it['probability']:.0%})", fontsize=8, color="#8b0000")
    fig.suptitle(f"Most confident mistakes ({len(items)} of {len(misclassified)})", fontsize=10)
    fig.tight_layout()
    return _save_fig(fig, Path(path))


# ---------------------------------------------------------------------------------------------------------------
# Reports


def write_report(metrics: dict[str, Any], out_dir: str | Path, *, title: str = "Evaluation",
                 info: dict[str, Any] | None = None, plots: bool = True) -> dict[str, Path]:
    """report.json (everything) + report.md (summary, per-breed table, confusions) + PNGs in ``out_dir``."""
    out = Path(out_dir)
    with writing(out, missing=True):  # a read-only run folder: one sentence, not OSError's traceback
        out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if plots and metrics["n"]:
        files["confusion"] = plot_confusion(metrics, out / "confusion.png")
        grid = plot_misclassified(metrics.get("misclassified", []), out / "misclassified.png")
        if grid is not None:
            files["misclassified"] = grid
    for stale in ("confusion.png", "misclassified.png"):  # an earlier report's plot this one has not (no mistake)
        if out / stale not in files.values():
            with writing(out / stale):
                (out / stale).unlink(missing_ok=True)
    data = {"title": title, "info": info or {}, **metrics}
    atomic_write_text(out / "report.json", json.dumps(data, indent=2))
    files["json"] = out / "report.json"
    lines = [f"# {title}", ""]
    for k, v in (info or {}).items():
        lines.append(f"- **{k}**: {v}")
    pct = fmt_pct
    lines += [
        f"- **photos**: {metrics['n']} ({metrics['classes_present']} of {metrics['num_classes']} classes present)",
        f"- **top-1 accuracy**: {pct(metrics['top1'])}",
        f"- **top-5 accuracy**: {pct(metrics['top5'])}",
        f"- **macro precision / recall / F1**: {pct(metrics['macro_precision'])} / {pct(metrics['macro_recall'])}"
        f" / {pct(metrics['macro_f1'])}",
        "",
    ]
    if "confusion" in files:
        lines += ["![confusion matrix](confusion.png)", ""]
    if metrics["most_confused"]:
        lines += ["## Most confused pairs", "", "| true | predicted as | photos | share of true |", "|---|---|--:|--:|"]
        lines += [f"| {p['true']} | {p['predicted']} | {p['count']} | {p['share_of_true']:.0%} |"
                  for p in metrics["most_confused"]]
        lines.append("")
    lines += ["## Per breed (worst F1 first)", "", "| breed | precision | recall | F1 | photos |",
              "|---|--:|--:|--:|--:|"]
    rows = sorted((r for r in metrics["per_class"] if r["support"]), key=lambda r: (r["f1"], r["class"]))
    lines += [f"| {r['class']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | {r['support']} |"
              for r in rows]
    if "misclassified" in files:
        lines += ["", "## Most confident mistakes", "", "![misclassified](misclassified.png)"]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    files["markdown"] = out / "report.md"
    return files


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table; floats in [0, 1] under an accuracy-like column print as percentages."""
    def cell(col: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float) and ("acc" in col or "top" in col):
            return f"{v:.1%}"
        if isinstance(v, float):
            return f"{v:.1f}"
        if isinstance(v, int) and col.startswith("param"):
            return f"{v:,}"
        return str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out)
