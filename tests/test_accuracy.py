"""Ensembles, TTA, head adaptation and new breeds (issue #9): shapes, symmetry, model-dir round trips, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.adapt import AdaptError, adapt, add_breed
from dogbreed.models import load_model_dir
from dogbreed.predict import BEST_BACKBONES, Predictor


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _photo(path: Path, seed: int, size: tuple[int, int] = (300, 260)) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return path


def _folder(root: Path, n: int, seed: int) -> Path:
    for i in range(n):
        _photo(root / f"p{i}.jpg", seed * 100 + i)
    return root


def _schema(pred: dict) -> tuple:
    return tuple(sorted(pred)), tuple(tuple(sorted(b)) for b in pred["breeds"])


@pytest.mark.slow
def test_best_ensemble_with_tta_has_single_model_schema(tmp_path: Path) -> None:
    photos = [str(_photo(tmp_path / f"{i}.jpg", i)) for i in range(2)]
    fast = Predictor(quality="fast")
    best = Predictor(quality="best")
    assert [m.preprocess.size for m in best.members] == [224, 240, 260]  # each backbone at its own resolution
    assert len(best.members) == len(BEST_BACKBONES) and best.tta_flip and not fast.tta_flip
    pf, pb = [p.to_dict() for p in fast.predict(photos)], [p.to_dict() for p in best.predict(photos)]
    assert [_schema(p) for p in pf] == [_schema(p) for p in pb]
    for p in pb:
        assert len(p["breeds"]) == 5 and p["verdict"] in ("dog", "no_dog", "uncertain_breed")
        probs = [b["probability"] for b in p["breeds"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5


@pytest.mark.slow
def test_flip_tta_of_symmetric_image_equals_plain() -> None:
    half = np.random.default_rng(3).integers(0, 255, (256, 128, 3), dtype=np.uint8)
    img = Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))  # 256 x 256: crop stays centred
    plain = Predictor(quality="fast", tta_flip=False)
    flip = Predictor(quality="fast", tta_flip=True)
    lp, _ = plain.scores([img])
    lf, _ = flip.scores([img])
    assert np.allclose(lp.numpy(), lf.numpy(), atol=1e-4)
    asym = Image.fromarray(np.concatenate([half, half], axis=1))
    assert not np.allclose(plain.scores([asym])[0].numpy(), flip.scores([asym])[0].numpy(), atol=1e-4)


@pytest.mark.slow
def test_add_breed_grows_round_trips_and_refuses(tmp_path: Path) -> None:
    new_dir = _folder(tmp_path / "kokoni", 4, seed=7)
    out = tmp_path / "model"
    clf, summary = add_breed("Kokoni", new_dir, out=out)
    assert len(clf.classes) == 121 and clf.classes[-1].wnid is None and summary["photos"] == 4
    loaded, cfg = load_model_dir(out)
    assert [b.name for b in loaded.classes] == [b.name for b in clf.classes]
    assert cfg["extra"]["added_breeds"][-1] == {"name": "Kokoni", "photos": 4, "unreadable": 0, "win_rate": 0.95}
    assert np.allclose(loaded.breed_head.weight.detach().numpy(), clf.breed_head.weight.detach().numpy())
    pred = Predictor(model=str(out), top_k=121)
    assert len(pred.classes) == 121
    res = pred.predict([str(new_dir / "p0.jpg")])[0].to_dict()
    kokoni = [b for b in res["breeds"] if b["name"] == "Kokoni"]
    assert kokoni and kokoni[0]["wnid"] is None
    json.dumps(res)
    with pytest.raises(AdaptError, match="already exists"):
        add_breed("golden retriever", new_dir, out=tmp_path / "x")
    with pytest.raises(AdaptError, match="already exists"):
        add_breed("kokoni", new_dir, model=str(out), out=tmp_path / "y")
    few = _folder(tmp_path / "few", 2, seed=9)
    (few / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AdaptError, match="2 readable photo.*at least 3"):
        add_breed("Aidi", few, out=tmp_path / "z")
    assert not (tmp_path / "z").exists()


@pytest.mark.slow
def test_adapt_on_folder_per_breed_gives_loadable_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for seed, breed in enumerate(["golden_retriever", "beagle", "Samoyed"]):
        _folder(data / breed, 3, seed=seed + 20)
    out = tmp_path / "adapted"
    clf, summary = adapt(data, out)
    assert len(clf.classes) == 120 and summary["adapt"]["new_breeds"] == []
    assert summary["adapt"]["photos_per_breed"] == {"Golden retriever": 3, "Beagle": 3, "Samoyed": 3}
    loaded, cfg = load_model_dir(out)
    assert cfg["extra"]["adapt"]["photos"] == 9
    pred = Predictor(model=str(out))
    res = pred.predict([str(data / "beagle" / "p0.jpg")])[0].to_dict()
    assert len(res["breeds"]) == 5 and res["breeds"][0]["wnid"].startswith("n0")
