"""A per-breed model card: run a model over a labelled folder and write what it gets right, per breed.

`dogbreed card --data DIR` (or `make_card` from a notebook) scores every labelled photo with the same `Predictor`
the CLI and the service use, then writes card.md / card.json with plain and breed-balanced (macro) top-1/top-5
(bootstrap over breeds), per-breed recall and precision, the most-confused pairs, calibration (ECE) and a
reliability plot. Breed-balanced figures matter because a user's dog is any of the 120 breeds, while most photo
sets hold many photos of a few breeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .breeds import BreedIndex
from .calibration import decision_figures, ece
from .data import load_dataset
from .evaluate import compute_metrics, fmt_pct, plot_confusion, plot_reliability
from .fileio import atomic_write_text, out_folder
from .inference import executors, scoring
from .predict import Predictor

BOOTSTRAP = 2000


@dataclass
class Scored:
    """Log-probabilities over the model's classes for the photos whose breed the model knows."""

    paths: list[str]
    labels: np.ndarray
    logp: torch.Tensor
    unknown_breed: list[str]  # photos of breeds the model has no class for (not scored)
    unreadable: list[dict[str, str]]


def score_folder(predictor: Predictor, data: str | Path, progress: bool = False) -> Scored:
    """Every labelled photo under ``data`` (any layout `data.load_dataset` knows) -> the model's breed scores."""
    index = load_dataset(data)
    classes = BreedIndex(predictor.classes)
    known, unknown = [], []
    for s in index.samples:
        c = classes.find_labelled(s.label, s.breed, s.wnid)
        (known if c is not None else unknown).append((s.path, c))
    unreadable = [{"path": p.path, "error": p.reason} for p in index.problems]
    paths, labels, parts = [], [], []
    # The batch path's decoding (a thread ahead of the network); breed scores only: a card does not need the dog
    # detector (nor its cascade's second backbone, nor a member that reads dog or not alone).
    members = [m for m in predictor.members if not m.dog_only]
    batches = executors.batches([p for p, _ in known], [m.preprocess for m in members],
                                predictor.draft_size, predictor.batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(known) // predictor.batch_size), unit="batch",
                       desc=f"card {len(known)} photos")
    start = 0
    for b in batches:
        ok = []
        chunk, start = known[start:start + len(b.errors)], start + len(b.errors)
        for (path, c), err in zip(chunk, b.errors, strict=True):
            if err is None:
                ok.append((path, c))
            else:
                unreadable.append({"path": path, "error": err})
        if ok:
            outputs = scoring.run_members(members, b.tensors, predictor.tta_flip)
            parts.append(scoring.combine_breeds(outputs, predictor.decision.temperature))
            paths += [p for p, _ in ok]
            labels += [c for _, c in ok]
    logp = torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, len(predictor.classes))
    return Scored(paths, np.asarray(labels, dtype=np.int64), logp, [p for p, _ in unknown], unreadable)


def breed_balanced(hits: np.ndarray, labels: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = 0,
                   ) -> tuple[float, tuple[float, float]]:
    """Mean over breeds of per-breed accuracy, with a 95% interval from resampling breeds (not photos)."""
    breeds = np.unique(labels)
    per = np.array([hits[labels == c].mean() for c in breeds])
    rng = np.random.default_rng(seed)
    boot = per[rng.integers(0, len(per), (n_boot, len(per)))].mean(1)
    return float(per.mean()), (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5)))


def photo_interval(hits: np.ndarray, labels: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = 0,
                   ) -> tuple[float, float]:
    """95% interval of plain accuracy, resampling breeds (photos of one breed are not independent)."""
    breeds = np.unique(labels)
    k = np.array([hits[labels == c].sum() for c in breeds])
    n = np.array([(labels == c).sum() for c in breeds])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(breeds), (n_boot, len(breeds)))
    boot = k[idx].sum(1) / n[idx].sum(1)
    return float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def summary(logp: torch.Tensor, labels: np.ndarray) -> dict[str, Any]:
    """Plain and breed-balanced top-1/top-5 with breed-bootstrap intervals, and ECE, for (N, C) log-probs."""
    top5 = logp.topk(min(5, logp.shape[1]), -1).indices.numpy()
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(1)
    m1, m1_ci = breed_balanced(hit1, labels)
    m5, m5_ci = breed_balanced(hit5, labels)
    return {"photos": int(len(labels)), "breeds": int(len(np.unique(labels))),
            "top1": float(hit1.mean()), "top1_ci": photo_interval(hit1, labels),
            "top5": float(hit5.mean()), "top5_ci": photo_interval(hit5, labels),
            "macro_top1": m1, "macro_top1_ci": m1_ci, "macro_top5": m5, "macro_top5_ci": m5_ci,
            "ece": ece(logp, labels)}


def make_card(predictor: Predictor, data: str | Path, out: str | Path, *, title: str | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Score ``data`` with ``predictor`` and write card.md, card.json, reliability.png and confusion.png."""
    out_folder(out)  # before the photos are scored: an output that cannot be a folder fails now, in one sentence
    scored = score_folder(predictor, data, progress)
    return write_card(scored, [b.name for b in predictor.classes], out,
                      title=title or f"Model card: {predictor.model} ({predictor.quality}) on {Path(data).name}",
                      about={"model": str(predictor.model), "quality": predictor.quality, "data": str(data)},
                      decision=predictor_decision(predictor, scored))


def predictor_decision(predictor: Predictor, scored: Scored) -> dict[str, Any]:
    """The predictor's own decision on these photos: the scores are already temperature-scaled (combine_breeds),
    and a calibrated top-1 below its threshold is what it answers "uncertain_breed" for (on a photo it finds a dog
    in)."""
    d = predictor.decision
    flagged = scored.logp.exp().max(-1).values.numpy() < d.uncertain_threshold if len(scored.labels) else np.zeros(0)
    figs = decision_figures(scored.logp, scored.labels, flagged.astype(bool)) if len(scored.labels) else {}
    return {"temperature": float(d.temperature), "uncertain_threshold": float(d.uncertain_threshold), **figs}


def write_card(scored: Scored, names: Sequence[str], out: str | Path, *, title: str,
               about: dict[str, Any] | None = None, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's files from scores already computed (by `score_folder`, or out of fold by a benchmark).

    ``scored.logp`` must be the model's *calibrated* log-probabilities (temperature applied), so the card's ECE and
    reliability plot describe what the model answers; ``decision`` records the temperature and the uncertain-breed
    split (`predictor_decision`, or the bench's out-of-fold one)."""
    if not len(scored.labels):
        raise ValueError("no readable photo of a breed this model knows")
    probs = scored.logp.exp().numpy()
    metrics = compute_metrics(scored.labels, probs, list(names), scored.paths)
    head = summary(scored.logp, scored.labels)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    plot_reliability(probs, scored.labels, outdir / "reliability.png",
                     title=f"{head['photos']} photos, {head['breeds']} breeds")
    plot_confusion(metrics, outdir / "confusion.png")
    card = {"title": title, **(about or {}), **head, "decision": decision or {},
            "unknown_breed_photos": len(scored.unknown_breed), "unreadable": scored.unreadable,
            "per_breed": [r for r in metrics["per_class"] if r["support"] or r["precision"]],
            "most_confused": metrics["most_confused"], "misclassified": metrics["misclassified"]}
    atomic_write_text(outdir / "card.json", json.dumps(card, indent=1))
    atomic_write_text(outdir / "card.md", card_markdown(card))
    return card


def _ci(lo_hi: Sequence[float]) -> str:
    return f"{lo_hi[0]:.1%}–{lo_hi[1]:.1%}"


def _temperature(d: dict[str, Any]) -> str:
    if "temperatures" in d:  # out of fold: one temperature per fold, fitted without that fold's photos
        ts = d["temperatures"]
        return f", after the temperature (T = {min(ts):.2f}–{max(ts):.2f}, fitted on the other folds)"
    return f", after the model's temperature (T = {d['temperature']:.2f})" if "temperature" in d else ""


def _uncertain(d: dict[str, Any]) -> list[str]:
    if "flagged" not in d:
        return []
    th = d.get("uncertain_threshold")
    th = (f"{th:.3f}" if isinstance(th, float) else
          f"{min(d['thresholds']):.3f}–{max(d['thresholds']):.3f} by fold" if "thresholds" in d else "?")
    return [f"- **uncertain breed** (calibrated top-1 below {th}): {d['flagged']:.1%} of photos flagged; the "
            f"confident answers are {fmt_pct(d['acc_confident'])} right ({d['n_confident']} photos), the flagged "
            f"ones {fmt_pct(d['acc_uncertain'])} ({d['n_uncertain']})"]


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# {card['title']}", "",
             f"- **photos**: {card['photos']} of {card['breeds']} breeds"
             f" ({card['unknown_breed_photos']} of breeds the model does not know, {len(card['unreadable'])} "
             "unreadable: not scored)",
             f"- **top-1**: {fmt_pct(card['top1'])} ({_ci(card['top1_ci'])}); **top-5**: {fmt_pct(card['top5'])}",
             f"- **breed-balanced top-1** (mean over breeds): {fmt_pct(card['macro_top1'])} "
             f"({_ci(card['macro_top1_ci'])}); **top-5**: {fmt_pct(card['macro_top5'])}",
             f"- **calibration**: ECE {card['ece']:.3f} (15 equal-width bins of the top-1 probability)"
             + _temperature(card.get("decision") or {}),
             *_uncertain(card.get("decision") or {}),
             "- intervals: 95%, bootstrap over breeds",
             "- scored: the breed model's probabilities on each photo as a whole (no detection stage, dog-or-not "
             "decision, cascade or gallery: those change what `dogbreed predict` answers, not these figures)",
             *([f"- {card['note']}"] if card.get("note") else []), "",
             "![reliability](reliability.png)", ""]
    if card["most_confused"]:
        lines += ["## Most confused pairs", "", "| true | answered as | photos | share of true |", "|---|---|--:|--:|"]
        lines += [f"| {p['true']} | {p['predicted']} | {p['count']} | {p['share_of_true']:.0%} |"
                  for p in card["most_confused"]]
        lines.append("")
    lines += ["## Per breed (lowest recall first)", "", "| breed | photos | recall | precision |", "|---|--:|--:|--:|"]
    rows = sorted((r for r in card["per_breed"] if r["support"]), key=lambda r: (r["recall"], r["class"]))
    lines += [f"| {r['class']} | {r['support']} | {r['recall']:.0%} | {r['precision']:.0%} |" for r in rows]
    lines += ["", "![confusion](confusion.png)", ""]
    return "\n".join(lines)


__all__ = ["Scored", "breed_balanced", "card_markdown", "make_card", "photo_interval", "predictor_decision",
           "score_folder", "summary", "write_card"]
