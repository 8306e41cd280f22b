"""The per-breed model card: breed-balanced figures, intervals over breeds, and the files a person reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dogbreed.card import breed_balanced, make_card, photo_interval, summary

ROOT = Path(__file__).resolve().parents[1]


def test_breed_balanced_weights_every_breed_alike() -> None:
    # Breed 0: 8 photos all right; breed 1: 2 photos both wrong. Plain accuracy 80%, breed-balanced 50%.
    labels = np.array([0] * 8 + [1] * 2)
    hits = np.array([True] * 8 + [False] * 2)
    mean, (lo, hi) = breed_balanced(hits, labels)
    assert mean == pytest.approx(0.5)
    assert 0.0 <= lo <= mean <= hi <= 1.0
    lo_p, hi_p = photo_interval(hits, labels)
    assert lo_p <= 0.8 <= hi_p


def test_summary_counts_top5_and_breeds() -> None:
    logp = torch.log_softmax(torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5.0, 1, 0, 0, 0], [1.0, 0, 0, 0, 0, 5]]), -1)
    s = summary(logp, np.array([0, 2, 0]))
    assert s["photos"] == 3 and s["breeds"] == 2
    assert s["top1"] == pytest.approx(1 / 3)
    assert s["top5"] == pytest.approx(1.0)  # the second photo's breed is its second guess, the third's its second
    assert s["macro_top1"] == pytest.approx((0.5 + 0.0) / 2)


@pytest.mark.real
@pytest.mark.slow
def test_card_on_real_photos(real_data: Path, tmp_path: Path, default_predictor) -> None:
    src = real_data / "imagenet-val-dogs"
    data = tmp_path / "data"
    for d in sorted(p for p in src.iterdir() if p.is_dir())[:2]:
        (data / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.jpg"))[:3]:
            shutil.copy(f, data / d.name / f.name)
    (data / "Not a breed").mkdir()
    shutil.copy(f, data / "Not a breed" / "x.jpg")
    (data / d.name / "cut.jpg").write_bytes(f.read_bytes()[:400])  # a header, then nothing: fails to decode
    card = make_card(default_predictor, data, tmp_path / "card")
    assert card["photos"] == 6 and card["breeds"] == 2 and card["unknown_breed_photos"] == 1
    assert [Path(u["path"]).name for u in card["unreadable"]] == ["cut.jpg"]
    saved = json.loads((tmp_path / "card" / "card.json").read_text())
    recalls = {r["class"]: r["recall"] for r in saved["per_breed"] if r["support"]}
    # Per-breed recalls are stored rounded to 4 decimals.
    assert len(recalls) == 2 and saved["macro_top1"] == pytest.approx(np.mean(list(recalls.values())), abs=1e-3)
    md = (tmp_path / "card" / "card.md").read_text()
    assert "breed-balanced top-1" in md and all(name in md for name in recalls)
    for png in ("reliability.png", "confusion.png"):
        assert (tmp_path / "card" / png).stat().st_size > 1000


def _load_accuracy_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "bench" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_cards_report_the_calibrated_decision(tmp_path: Path) -> None:
    """The published cards must describe what the shipped model answers: its temperature applied (fitted without
    the photo's fold), not the raw head. Over-confident synthetic logits make the two ECEs far apart."""
    from dogbreed.calibration import combine, cross_fit, ece, out_of_fold

    bench = _load_accuracy_bench()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, 300)
    logits = torch.as_tensor(rng.normal(0, 1, (300, 120)), dtype=torch.float32)
    logits[torch.arange(300), torch.as_tensor(y)] += 1.5
    logits *= 4  # over-confident: the fitted temperature is well above 1
    src = np.array(["web-dogs"] * 200 + ["imagenet-val-dogs"] * 100)
    d = {"n_y": y, "src": src, "n_files": [str(tmp_path / f"{i}.jpg") for i in range(300)]}
    pooled = bench.cards(d, {"efficientnet_lite0": [logits]}, tmp_path / "cards")
    cal = out_of_fold([logits], y, k=5, target=bench.CONFIDENT_ACCURACY)
    cf = cross_fit([logits], y, k=5, target=bench.CONFIDENT_ACCURACY)
    assert pooled["ece_after"] == pytest.approx(cf.ece_after) and pooled["flagged"] == pytest.approx(cf.flagged)
    for name, m in (("web-dogs", src == "web-dogs"), ("imagenet-val-dogs", src == "imagenet-val-dogs")):
        card = json.loads((tmp_path / "cards" / name / "card.json").read_text())
        mt = torch.as_tensor(m)
        assert card["ece"] == pytest.approx(ece(cal.logp[mt], y[m]))
        raw = ece(combine([logits])[mt], y[m])
        assert abs(card["ece"] - raw) > 0.05, "the card must not report the uncalibrated head's ECE"
        assert card["decision"]["n_confident"] + card["decision"]["n_uncertain"] == m.sum()
        assert "after the temperature" in (tmp_path / "cards" / name / "card.md").read_text()


def test_published_cards_agree_with_the_shipped_calibration_and_readme() -> None:
    """docs/cards were written with the shipped recipe's out-of-fold decision: the pooled ECE and flagged share they
    record are the ones fit_default_heads.py stored with the shipped heads, and the ones README quotes."""
    meta = json.loads((ROOT / "src" / "dogbreed" / "data" / "breed_heads.json").read_text())
    shipped = meta["calibration"]["modes"]["fast"]["calibration_out_of_fold"]
    readme = (ROOT / "README.md").read_text()
    for name in ("web-dogs", "imagenet-val-dogs"):
        card = json.loads((ROOT / "docs" / "cards" / name / "card.json").read_text())
        pooled = card["decision"]["all_natural_photos"]
        assert pooled["photos"] == shipped["n"]
        assert pooled["ece_after"] == pytest.approx(shipped["ece_after"], abs=1e-4)
        assert pooled["ece_before"] == pytest.approx(shipped["ece_before"], abs=1e-4)
        assert pooled["flagged"] == pytest.approx(shipped["flagged"], abs=1e-4)
        assert card["decision"]["temperatures"] == pytest.approx(shipped["temperatures"], abs=1e-4)
        assert card["ece"] < card["decision"]["ece_before_temperature"]
        md = (ROOT / "docs" / "cards" / name / "card.md").read_text()
        assert f"ECE {card['ece']:.3f}" in md and f"ECE {card['ece']:.3f}" in readme, name
    assert f"ECE {shipped['ece_before']:.3f} → {shipped['ece_after']:.3f}" in readme
