"""The per-breed model card: breed-balanced figures, intervals over breeds, and the files a person reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dogbreed.card import breed_balanced, make_card, photo_interval, summary


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
