"""adapt.py: head adaptation and new breeds: model-dir round trips, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import smooth_photo

from dogbreed.adapt import AdaptError, adapt, add_breed
from dogbreed.models import load_model_dir
from dogbreed.predict import Predictor


def _folder(root: Path, n: int, seed: int) -> Path:
    for i in range(n):
        smooth_photo(root / f"p{i}.jpg", seed * 100 + i)
    return root


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
