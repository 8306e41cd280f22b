"""docs/seed_study.md, its plot and each row's learning curves, from the run dirs of bench/seed_study.py.

Only measured figures go in: every cell is read from a run dir (summary.json, metrics.json, the eval reports that
`study_row` cached), never typed in. The study's own figures are the ones issue 24 quotes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dogbreed.fileio import atomic_write_text

CHANCE = 1 / 120
HONEST = ("web-dogs", "imagenet-val-dogs")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _gap(r: dict[str, Any]) -> float:
    """Train minus val accuracy at the last epoch: how much the model fits its training photos beyond what carries
    over to photos it did not train on (grows when a model over-fits)."""
    last = r["history"][-1]
    return last["train_acc"] - last["val_acc"]


def capped(r: dict[str, Any]) -> bool:
    return not r.get("stopped_early") and r["epochs"] < r.get("preset_max_epochs", r["epochs"])


def verdicts(data: dict[str, dict[str, Any]], iterations: Sequence[str]) -> dict[str, str]:
    """Whether each finding the issue names holds here, from the rows measured so far. A verdict on a capped row
    (stopped before early stopping decided) is marked provisional: a longer run can turn it."""
    out: dict[str, str] = {}
    base = data.get("baseline")

    def say(preset: str, holds: bool, why: str, *others: str) -> None:
        rows = [data[p] for p in (preset, *others) if p in data]
        note = " — provisional: capped" if any(capped(r) for r in rows) else ""
        out[preset] = f"{'yes' if holds else 'no'} ({why}){note}"

    if base:
        for p, bigger in (("dropout", False), ("batchnorm", True)):
            if p in data:
                g, gb = _gap(data[p]), _gap(base)
                say(p, (g > gb) if bigger else (g < gb),
                    f"train−val gap {g * 100:+.1f} pts vs the baseline's {gb * 100:+.1f}", "baseline")
        if "adam" in data:
            a, b = data["adam"]["best_val_top1"], base["best_val_top1"]
            say("adam", a < 2 * CHANCE <= b, f"val {a:.1%} vs the baseline's {b:.1%}; chance {CHANCE:.1%}",
                "baseline")
        if "combined" in data:
            c, b = data["combined"]["best_val_top1"], base["best_val_top1"]
            say("combined", c > b, f"val {c:.1%} vs the baseline's {b:.1%}", "baseline")
        for p in iterations:
            if p in data and p not in out and p != "pool6":
                d = (data[p]["best_val_top1"] - base["best_val_top1"]) * 100
                out[p] = f"no finding named; val {d:+.1f} pts vs the baseline"
    ran = {p: data[p]["best_val_top1"] for p in iterations if p in data}
    if "pool6" in ran and len(ran) > 1:
        top = max(ran, key=ran.__getitem__)
        say("pool6", top == "pool6", f"the best of {len(ran)} iterations run: `{top}` {ran[top]:.1%}", *ran)
    return out


def curves(run: Path, preset: str, assets: Path) -> str:
    """Copy the row's learning-curve PNGs (small) into docs/ and link them; checkpoints stay in the run dir."""
    links = []
    for name in ("accuracy", "loss"):
        src = run / "plots" / f"{name}.png"
        if src.is_file():
            assets.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, assets / f"{preset}-{name}.png")
            links.append(f"[{name}]({assets.name}/{preset}-{name}.png)")
    return " ".join(links) or "–"


def epochs_cell(r: dict[str, Any]) -> str:
    best = f"best {r['best_epoch']}"
    if r.get("stopped_early"):
        return f"{r['epochs']} ({best}; early stopping)"
    if capped(r):
        return f"**{r['epochs']}: capped** ({best}; the preset allows {r['preset_max_epochs']})"
    return f"{r['epochs']} ({best}; all allowed)"


def table_row(row: Any, r: dict[str, Any] | None, note: str, verdict: str, link: str) -> str:
    if r is None:
        return f"| `{row.preset}` | {row.study} | {note} | | | | | | | | {row.finding or '–'} | – | {link} |"
    h = {k: r.get(k) or {} for k in HONEST}
    params = f"{r['params'] / 1e6:.2f} M" + (f" ({r['trainable_params'] / 1e6:.2f} M trained)"
                                              if r["trainable_params"] != r["params"] else "")
    return (f"| `{row.preset}` | {row.study} | {_pct(r['best_val_top1'])} | {_pct(r['test_top1'])} / "
            f"{_pct(r['test_top5'])} | {_pct(h['web-dogs'].get('top1'))} / "
            f"{_pct(h['web-dogs'].get('macro_recall'))} | {_pct(h['imagenet-val-dogs'].get('top1'))} | "
            f"{r.get('image_size') or '–'} | {params} | {epochs_cell(r)} | {r['train_seconds'] / 60:.1f} min | "
            f"{row.finding or '–'} | {verdict or '–'} | {link} |")


def plot(rows: Sequence[Any], data: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.preset for r in rows if r.preset in data]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    ys = range(len(names))
    for k, (key, label) in enumerate((("best_val_top1", "val top-1 (1,320 Stanford)"),
                                      ("test_top1", "test top-1 (2,400 Stanford)"),
                                      ("web", "web-dogs top-1 (458)"))):
        vals = [(data[n].get("web-dogs") or {}).get("top1", 0) if key == "web" else data[n][key] for n in names]
        ax.barh([y + (k - 1) * 0.27 for y in ys], vals, height=0.27, label=label)
    study = {"baseline": 0.04, "combined": 0.074}  # the study's val figures as issue 24 quotes them
    ax.scatter([study[n] for n in names if n in study], [i for i, n in enumerate(names) if n in study],
               marker="|", s=300, color="k", label="the study's val top-1", zorder=3)
    ax.set_yticks(list(ys), [n + (" (capped)" if capped(data[n]) else "") for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("top-1 accuracy")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("The seed study's rows on the 120 Stanford Dogs breeds (this machine)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def write_report(rows: Sequence[Any], runs: Path, doc: Path, hardware: str,
                 outcome: dict[str, str]) -> None:
    from seed_study import ITERATIONS, ROW_FILE, in_progress

    data = {r.preset: json.loads((runs / r.preset / ROW_FILE).read_text()) for r in rows
            if (runs / r.preset / ROW_FILE).is_file()}
    for p, r in data.items():  # rows cached before the input size was recorded: the model dir has it
        if not r.get("image_size") and (runs / p / "model" / "model.json").is_file():
            r["image_size"] = json.loads((runs / p / "model" / "model.json").read_text())["preprocess"]["size"]
    found = verdicts(data, ITERATIONS)
    assets = doc.parent / doc.stem
    lines = []
    for row in rows:
        run = runs / row.preset
        note = ""
        if row.preset not in data:
            prog = in_progress(run)
            if row.preset == "transfer_resnet50" and not (run / ROW_FILE).is_file():
                note = ("**not run: no ImageNet ResNet-50 weights on this machine** (no package ships them, nothing "
                        "is downloaded here); `--resnet50-weights PATH` runs it")
            elif prog:
                note = (f"**unfinished**: {prog['epochs']} epoch(s) so far, val "
                        f"{max(h['val_acc'] for h in prog['history']):.1%}; the next run resumes it")
            elif run.is_dir():
                note = ("**started, no epoch finished** when the run was stopped (nothing to resume: the next run "
                        "starts it over)")
            else:
                note = "**not run yet** (no time left on the 2 shared cores); the next run trains it"
        lines.append(table_row(row, data.get(row.preset), note, found.get(row.preset, ""),
                               curves(run, row.preset, assets)))
    plot(rows, data, assets / "summary.png")
    atomic_write_text(doc, render(lines, data, hardware))


def render(lines: list[str], data: dict[str, dict[str, Any]], hardware: str) -> str:
    caps = {p: r["epochs"] for p, r in sorted(data.items()) if capped(r)}
    same = "the same for all of them, so they compare" if len(set(caps.values())) == 1 else "not all alike"
    cap = (f"**Capped** (stopped at the `--max-epochs` of the run that trained them, before early stopping "
           f"decided; {same}): "
           f"{', '.join(f'`{p}` at {n} epoch(s)' for p, n in caps.items())}. The study trained to early stopping "
           "(patience 5, up to 50 epochs); a capped row is a start, not the study's figure, and a verdict on it is "
           "provisional.") if caps else "No row is capped: each ran to early stopping or to its preset's max_epochs."
    command = " ".join(["python bench/seed_study.py", *sys.argv[1:]])  # what wrote this page
    return "\n".join([
        "# The seed study on the 120 Stanford Dogs breeds", "",
        f"Generated by `{command}` ({time.strftime('%Y-%m-%d %H:%M %Z')}); every figure is read from the run dirs "
        "(`runs/study/<row>/`), none typed in.", "",
        "- **Data**: `../shared/data/real/stanford-dogs`, official lists: train 10,680 / val 1,320 (carved per breed "
        "from the 12,000 official train photos) / test 2,400 (the official test photos here, 20 per breed). Stanford "
        "photos are ImageNet *training* photos, so val/test flatter every pretrained row; `web-dogs` (458 photos, 99 "
        "breeds) and `imagenet-val-dogs` (275 photos, 11 breeds) are photos no backbone trained on.",
        "- **Settings**: from-scratch rows: their presets (128x128, SGD lr 0.001, batch 32, early stopping patience "
        "5; `adam` and `combined` use Adam, as the study did) plus the study's augmentation (rotation ±15°, shifts "
        "±10%, mirroring; the study's exact ranges are not recorded, these are this package's defaults). Transfer "
        "rows: a head on cached features of the frozen backbone at its own input size (224/260 px), as their "
        "presets say. Nothing was chosen on any photo of this table.",
        f"- {cap}",
        f"- **Hardware**: {hardware}.",
        "- **The study's figures** are the ones issue 24 quotes (other data, not run here); for the rows where it "
        "names only a finding, the finding is tested instead. `breed-bal.` = mean over breeds of per-breed top-1.",
        "", "![summary](seed_study/summary.png)", "",
        "| row | the study | val top-1 (1,320) | Stanford test top-1 / top-5 (2,400) | web-dogs top-1 / breed-bal. "
        "(458, 99 breeds) | imagenet-val-dogs top-1 (275, 11 breeds) | input px | parameters | epochs | train "
        "wall | the study's finding | holds here? | learning curves |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *lines, "",
        "How a finding is read: *dropout regularises* / *batch norm over-fits* compare the gap between train and val "
        "accuracy at the last epoch with the baseline's (smaller / larger); *Adam fails to learn*: its val top-1 "
        f"stays under twice chance ({2 * CHANCE:.1%}) while the baseline's does not; *6x6 pooling gains most*: "
        "`pool6` has the best val top-1 of the iterations run; *combined*: its val top-1 beats the baseline's.", ""])
