"""adapt.py: head adaptation and new breeds: model-dir round trips, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import smooth_photo

from dogbreed.adapt import AdaptError, BlendConfig, adapt, add_breed, cross_fit_blend, fit_blend, fit_head
from dogbreed.calibration import breed_stratified_folds
from dogbreed.errors import WriteError
from dogbreed.models import load_model_dir
from dogbreed.predict import Predictor


def _folder(root: Path, n: int, seed: int) -> Path:
    for i in range(n):
        smooth_photo(root / f"p{i}.jpg", seed * 100 + i)
    return root


@pytest.mark.slow
def test_add_breed_refuses_a_folder_of_breed_folders(tmp_path: Path) -> None:
    """Found by QA: add-breed Mutt on a folder-per-breed tree learnt 'Mutt' from four known breeds' photos."""
    for breed in ("beagle", "pug", "Chihuahua"):
        for i in range(3):
            smooth_photo(tmp_path / "tree" / breed / f"{i}.jpg", seed=i)
    with pytest.raises(AdaptError, match=r"holds folders of breeds \(Chihuahua, beagle, pug\); add-breed learns one"):
        add_breed("Mutt", tmp_path / "tree")


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
    with pytest.raises(AdaptError, match="already exists in this model \\(as 'Labrador retriever'\\)"):
        add_breed("Labrador", new_dir, out=tmp_path / "x")
    # a model whose own breed is named as an everyday name is (grown before such names were known): a folder so
    # named adapts that breed, not the Stanford one the name also means
    cfg_path = out / "model.json"
    text = cfg_path.read_text()
    cfg_path.write_text(text.replace('"Kokoni"', '"Yorkie"'))
    assert load_model_dir(out)[0].classes[-1].name == "Yorkie"
    data = tmp_path / "again"
    _folder(data / "Yorkie", 3, seed=11)
    _folder(data / "beagle", 3, seed=12)
    _, summary = adapt(data, tmp_path / "again-model", model=str(out))
    assert summary["adapt"]["photos_per_breed"] == {"Yorkie": 3, "Beagle": 3}
    assert summary["adapt"]["new_breeds"] == []
    # and a card scores them as that breed (they were counted as a breed the model does not know, or as the
    # Yorkshire terrier)
    from dogbreed.card import score_folder

    scored = score_folder(Predictor(model=str(out)), data)
    named = {Path(p).parent.name: int(c) for p, c in zip(scored.paths, scored.labels, strict=True)}
    assert named == {"Yorkie": 120, "beagle": next(i for i, b in enumerate(loaded.classes) if b.name == "Beagle")}
    # a name three breeds share is a breed of its own, as asked, and the command says so
    from typer.testing import CliRunner

    from dogbreed.cli import app

    r = CliRunner().invoke(app, ["add-breed", "Poodle", str(new_dir), "--out", str(tmp_path / "poodle")])
    assert r.exit_code == 0, r.output
    assert ("note: 'Poodle' is now a breed of its own beside Toy poodle, Miniature poodle and Standard poodle"
            in r.output)
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


# --- the shipped default heads: weighted fits toward ImageNet and their out-of-fold cross-fit ---


def _toy(n_per: int, classes: int = 4, dim: int = 8, views: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 2
    y = np.repeat(np.arange(classes), n_per)
    x = centres[y][:, None, :] + rng.normal(size=(len(y), views, dim))
    return x.astype(np.float32), y


def test_zero_weight_rows_change_nothing_and_weights_matter() -> None:
    x, y = _toy(20)
    rows, ys = x.reshape(-1, x.shape[-1]), np.repeat(y, 2)
    w0, b0 = torch.zeros(4, 8), torch.zeros(4)
    noise = rows[:10] * 0 + 5.0  # ten loud rows labelled 0
    w_ref, b_ref = fit_head(rows, ys, w0, b0, l2=0.1, max_iter=50)
    w_z, b_z = fit_head(np.concatenate([rows, noise]), np.r_[ys, np.zeros(10, int)], w0, b0, l2=0.1, max_iter=50,
                        weights=np.r_[np.ones(len(ys)), np.zeros(10)])
    assert torch.allclose(w_ref, w_z, atol=1e-4) and torch.allclose(b_ref, b_z, atol=1e-4)
    w_h, _ = fit_head(np.concatenate([rows, noise]), np.r_[ys, np.zeros(10, int)], w0, b0, l2=0.1, max_iter=50,
                      weights=np.r_[np.ones(len(ys)), np.full(10, 50.0)])
    assert not torch.allclose(w_ref, w_h, atol=1e-2)


def test_strong_pull_keeps_the_start_head() -> None:
    x, y = _toy(10)
    w0, b0 = torch.randn(4, 8), torch.randn(4)
    w, b = fit_blend((x, y), (x[:0], y[:0]), w0, b0, BlendConfig(l2=1e6, max_iter=20))
    assert torch.allclose(w, w0, atol=1e-3) and torch.allclose(b, b0, atol=1e-3)


def test_out_of_fold_logits_come_from_a_fit_without_their_fold() -> None:
    stanford, (xn, yn) = _toy(10, seed=1), _toy(10, seed=2)
    cfg = BlendConfig(max_iter=40, natural_weight=20.0)
    w0, b0 = torch.zeros(4, 8), torch.zeros(4)
    (w, b), oof = cross_fit_blend(stanford, (xn, yn), w0, b0, cfg)
    assert oof.shape == (40, 2, 4)
    # The reference: fold f's head is fitted on Stanford and the other folds only, from a start that saw no
    # natural photo; the photos of fold f are then scored by it.
    fold = breed_stratified_folds(yn, cfg.folds, cfg.seed)
    start = fit_blend(stanford, (xn[:0], yn[:0]), w0, b0, cfg)
    for f in range(cfg.folds):
        tr = fold != f
        wf, bf = fit_blend(stanford, (xn[tr], yn[tr]), w0, b0, cfg, start=start)
        assert np.allclose(oof[~tr], (torch.as_tensor(xn[~tr]) @ wf.T + bf).numpy(), atol=1e-4)
        assert not torch.allclose(wf, w, atol=1e-4)  # the full fit did see fold f


@pytest.mark.slow
def test_adapt_refuses_what_would_save_a_broken_model_and_names_any_script(tmp_path: Path) -> None:
    """Found by QA: a folder named 柴犬 had no lookup key (only a-z were kept), so each of its photos became a breed
    of its own; a new breed whose photos were all unreadable, or a negative l2, saved NaN weights and said it
    succeeded, and every prediction with the model then crashed; an --out that is a file failed in a traceback
    after all features were extracted."""
    from dogbreed.adapt import AdaptConfig
    from dogbreed.errors import WriteError

    data = tmp_path / "data"
    _folder(data / "beagle", 3, seed=40)
    _folder(data / "柴犬", 3, seed=41)
    clf, summary = adapt(data, tmp_path / "m")
    assert summary["adapt"]["new_breeds"] == ["柴犬"] and len(clf.classes) == 121
    assert summary["adapt"]["photos_per_breed"] == {"Beagle": 3, "柴犬": 3}
    with pytest.raises(AdaptError, match="already exists"):  # add-breed finds the same name again
        add_breed("柴犬", data / "柴犬", model=str(tmp_path / "m"), out=tmp_path / "m2")

    (data / "Newbreed").mkdir()
    (data / "Newbreed" / "a.jpg").write_bytes(b"<html>not a photo</html>")
    with pytest.raises(AdaptError, match="no readable photo of the new breed 'Newbreed'"):
        adapt(data, tmp_path / "m3")
    assert not (tmp_path / "m3").exists()
    for bad in (-5.0, float("nan")):
        with pytest.raises(AdaptError, match="l2 must be a number >= 0"):
            AdaptConfig(l2=bad)
    for bad_name in ("../../etc", "x" * 200):  # a breed's name becomes a folder's in `feedback export`
        with pytest.raises(AdaptError, match="printable characters, without /"):
            add_breed(bad_name, data / "beagle", out=tmp_path / "m4")
    (tmp_path / "file.txt").write_text("x")
    for out, why in ((tmp_path / "file.txt", "is a file, not a folder"), (tmp_path / "file.txt" / "m", "is a file"),
                     ("", "no output folder given")):
        with pytest.raises(WriteError, match=why):
            adapt(data, out)


def test_a_model_in_out_is_replaced_only_when_asked(tmp_path: Path) -> None:
    """Found by review: add-breed --out my_model replaced the model already there without a word."""
    from typer.testing import CliRunner

    from dogbreed.cli import app

    new_dir = _folder(tmp_path / "kokoni", 4, seed=3)
    out = tmp_path / "model"
    add_breed("Kokoni", new_dir, out=out)
    before = (out / "model.safetensors").read_bytes(), (out / "model.json").read_bytes()
    with pytest.raises(WriteError, match="already holds a model; give another folder, or --overwrite"):
        add_breed("Aidi", new_dir, model=str(out), out=out)
    r = CliRunner().invoke(app, ["add-breed", "Aidi", str(new_dir), "--model", str(out), "--out", str(out)])
    assert r.exit_code == 2 and "already holds a model" in r.output
    assert ((out / "model.safetensors").read_bytes(), (out / "model.json").read_bytes()) == before
    r = CliRunner().invoke(app, ["add-breed", "Aidi", str(new_dir), "--model", str(out), "--out", str(out),
                                 "--overwrite"])
    assert r.exit_code == 0, r.output
    assert [b.name for b in load_model_dir(out)[0].classes][-2:] == ["Kokoni", "Aidi"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("mine")  # a folder without a model is written into as before
    add_breed("Aidi", new_dir, out=tmp_path / "notes")
    assert (tmp_path / "notes" / "readme.txt").read_text() == "mine" and load_model_dir(tmp_path / "notes")
