from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dogbreed.breeds import DOG_INDICES, DOMESTIC_CAT_INDICES
from dogbreed.cli import app
from dogbreed.dogness import DogDetector, default_detector, fit_dog_detector, fit_dog_detector_arrays
from dogbreed.predict import Predictor, dog_mass

runner = CliRunner()
LITE0 = "efficientnet_lite0"


def _fake_outputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet logits (n, 2 views, 1000): dogs get a dog class on top, not-dogs a cat class (with overlap)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2 == 0
    logits = rng.normal(0, 1, (n, 2, 1000)).astype(np.float32)
    for i in range(n):
        cls = rng.choice(DOG_INDICES) if y[i] else rng.choice(DOMESTIC_CAT_INDICES)
        logits[i, :, cls] += rng.uniform(2, 8)
    return logits, y


def test_head_fits_calibrates_and_round_trips(tmp_path: Path) -> None:
    logits, y = _fake_outputs(200)
    det, oof = fit_dog_detector_arrays({LITE0: (logits, None)}, y, target_recall=0.95)
    p = det.probability(logits[:, 0], backbone=LITE0)
    assert p[y].mean() > 0.8 and p[~y].mean() < 0.2
    assert oof[LITE0].shape == (200, 2)
    # Cat mass may only lower the score (sign constraint).
    assert float(det.heads[LITE0].weight[1]) <= 0
    # Thresholds keep the target share of out-of-fold dogs.
    z = oof[LITE0][:, 0]
    assert np.mean(1 / (1 + np.exp(-z[y])) >= det.thresholds[f"{LITE0}/plain"]) >= 0.95
    path = det.save(tmp_path / "det.json")
    assert path.with_suffix(".safetensors").stat().st_size < 10_000
    again = DogDetector.load(tmp_path / "det.safetensors")
    assert np.allclose(again.probability(logits[:, 0]), p)
    assert again.thresholds == det.thresholds and again.target_recall == 0.95
    assert again.threshold([LITE0], ("plain",), 0.999) <= again.threshold([LITE0], ("plain",), 0.9)


def test_refuses_single_class_and_empty_inputs() -> None:
    logits, y = _fake_outputs(20)
    with pytest.raises(ValueError, match="need at least 2 dog and 2 not-dog photos"):
        fit_dog_detector_arrays({LITE0: (logits, None)}, np.ones(20, dtype=bool))
    with pytest.raises(ValueError, match="need dog and not-dog photos"):
        fit_dog_detector(["a.jpg"], [])


def test_shipped_detector_sets_the_thresholds(default_predictor: Predictor) -> None:
    det = default_detector()
    assert det is not None and LITE0 in det.heads
    assert default_predictor.detector is not None
    if det.cascade is not None:  # `fast` runs the cascade: one threshold, the cascade's, decides every photo
        assert default_predictor.dog_cascade
        assert default_predictor.decision.dog_threshold == pytest.approx(det.cascade.threshold)
    else:
        assert default_predictor.decision.dog_threshold == pytest.approx(det.threshold([LITE0], ("plain",)))
    looser = Predictor(dog_target_recall=0.9)  # a recall target asks for the first member's own threshold
    assert not looser.dog_cascade
    assert looser.decision.dog_threshold == pytest.approx(det.threshold([LITE0], ("plain",), 0.9))


def _cli_predict(files: list[Path], *extra: str) -> list[dict]:
    res = runner.invoke(app, ["predict", *map(str, files), "--format", "json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_cli_three_answers(tmp_path: Path, chelsea_jpeg: bytes, grey_jpeg: bytes, real_data: Path) -> None:
    (tmp_path / "chelsea.jpg").write_bytes(chelsea_jpeg)
    (tmp_path / "grey.jpg").write_bytes(grey_jpeg)
    dog = sorted((real_data / "imagenet-val-dogs").glob("*golden_retriever/*.jpg"))[0]
    out = _cli_predict([dog, tmp_path / "chelsea.jpg", tmp_path / "grey.jpg"])
    assert [o["verdict"] for o in out] == ["dog", "no_dog", "no_dog"], out
    assert out[0]["dog_probability"] > 0.9 and out[1]["dog_probability"] < 0.1
    assert all(o["verdict"] in ("dog", "no_dog", "uncertain_breed") for o in out)


@pytest.mark.slow
def test_cli_refit_on_tiny_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chelsea_jpeg: bytes) -> None:
    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "cache"))
    dogs, not_dogs, empty = tmp_path / "dogs", tmp_path / "not", tmp_path / "empty"
    for d in (dogs, not_dogs, empty):
        d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        # Stand-ins: noise as "dogs", flat colours as "not dogs"; the test is about the plumbing, not the model.
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(dogs / f"d{i}.jpg")
        Image.fromarray(np.full((96, 96, 3), 60 * i + 20, np.uint8)).save(not_dogs / f"n{i}.png")
    res = runner.invoke(app, ["fit-dog-detector", "--dogs", str(dogs), "--not-dogs", str(empty)])
    assert res.exit_code == 2 and "need dog and not-dog photos" in res.output
    res = runner.invoke(app, ["fit-dog-detector", "--dogs", str(dogs), "--not-dogs", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "not a folder" in res.output
    out = tmp_path / "mine"
    res = runner.invoke(app, ["fit-dog-detector", "--dogs", str(dogs), "--not-dogs", str(not_dogs), "--out", str(out),
                              "--target-recall", "0.9"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "mine.json").is_file() and (tmp_path / "mine.safetensors").is_file()
    det = DogDetector.load(tmp_path / "mine.json")
    assert det.target_recall == 0.9 and det.meta["n_dog"] == 3
    (tmp_path / "chelsea.jpg").write_bytes(chelsea_jpeg)
    (p,) = _cli_predict([tmp_path / "chelsea.jpg"], "--dog-detector", str(tmp_path / "mine.json"))
    assert p["verdict"] in ("dog", "no_dog", "uncertain_breed") and 0 <= p["dog_probability"] <= 1


def test_cross_source_cats_rejected_better_than_dog_mass(real_data: Path) -> None:
    """Fit on Kaggle/Imagenette photos, test on Cerberus cats and ImageNet-val dogs (other sources).

    Small (60 fit + 60 test photos, plain view) so it stays fast with a cold feature cache.
    """
    from dogbreed.features import extract
    from dogbreed.models import default_classifier

    fit_dogs = sorted((real_data / "dogs-any").glob("*.jpg"))[:20]
    fit_cats = sorted((real_data / "not-dogs" / "cat").glob("kaggle-*.jpg"))[:20]
    fit_other = sorted((real_data / "not-dogs" / "other").glob("n01440764-tench/*.jpg"))[:10] + \
        sorted((real_data / "not-dogs" / "other").glob("n03417042-garbage_truck/*.jpg"))[:10]
    test_dogs = [p for p in sorted((real_data / "imagenet-val-dogs").glob("*/*.jpg"))
                 if "English_springer" not in str(p)][::8][:30]  # springer photos come from Imagenette
    test_cats = sorted((real_data / "not-dogs" / "cat").glob("cerberus-*.jpg"))[::3][:30]
    clf = default_classifier(LITE0)
    fit = extract(fit_dogs + fit_cats + fit_other, clf, views=("plain",))
    test = extract(test_dogs + test_cats, clf, views=("plain",))
    y_fit = np.array([True] * len(fit_dogs) + [False] * (len(fit_cats) + len(fit_other)))
    det, _ = fit_dog_detector_arrays({LITE0: (fit.imagenet_logits, None)}, y_fit, views=("plain",))
    imnet = test.imagenet_logits[:, 0]
    nd = len(test_dogs)
    scores = {"detector": det.probability(imnet, backbone=LITE0), "mass": dog_mass(imnet)}
    # Threshold keeping 90% of the test dogs (27 of 30); share of cats below it, and AUROC.
    rejected = {n: float(np.mean(s[nd:] < np.quantile(s[:nd], 0.1))) for n, s in scores.items()}
    auroc = {n: float(np.mean(s[:nd, None] > s[None, nd:])) for n, s in scores.items()}
    assert rejected["detector"] >= rejected["mass"] + 0.05, (rejected, auroc)
    assert auroc["detector"] >= auroc["mass"], auroc


LITE2 = "efficientnet_lite2"


def _with_cascade(tmp_path: Path, band: tuple[float, float]) -> Path:
    """The shipped detector's heads with a cascade over ``band`` (Lite0 plain + Lite2 plain/flip in it)."""
    from dogbreed.dogness import Cascade

    det = default_detector()
    assert det is not None and LITE2 in det.heads
    det.cascade = Cascade(LITE0, band, [(LITE0, "plain"), (LITE2, "plain"), (LITE2, "flip")], 0.5)
    return det.save(tmp_path / "cascade")


def test_cascade_round_trips_and_refuses_a_band_without_its_threshold(tmp_path: Path) -> None:
    from dogbreed.dogness import Cascade

    det = DogDetector.load(_with_cascade(tmp_path, (0.1, 0.97)))
    assert det.cascade is not None and det.cascade.band == (0.1, 0.97)
    assert det.cascade.second[1] == (LITE2, "plain") and det.cascade.extra_backbones() == [LITE2]
    with pytest.raises(ValueError, match="must hold its threshold"):
        Cascade.from_dict({"first": LITE0, "band": [0.6, 0.9], "second": [[LITE0, "plain"]], "threshold": 0.5})


def test_cascade_runs_the_second_member_only_inside_the_band(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    from dogbreed.inference.decode import Prepared, to_input
    from dogbreed.models import default_classifier
    from dogbreed.transforms import load_image, preprocess_image, to_tensor

    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(chelsea_jpeg)
    plain = Predictor(dog_cascade=False).predict([str(photo)])[0].dog_probability
    # A band that holds nothing: the answer is the first member's, and the second member is never loaded.
    empty = Predictor(dog_detector=str(_with_cascade(tmp_path / "e", (0.5, 0.5))))
    assert empty.dog_cascade and empty.decision.dog_threshold == 0.5
    assert empty.predict([str(photo)])[0].dog_probability == pytest.approx(plain, abs=1e-5)
    assert empty.loaded.cascade.loaded_backbones == []
    # A band that holds everything: the answer is the mean calibrated logit of Lite0 plain + Lite2 plain and flip.
    full = Predictor(dog_detector=str(_with_cascade(tmp_path / "f", (0.0, 1.0))), runtime="torch")
    got_bytes = full.predict([chelsea_jpeg])[0].dog_probability  # the decoded image handed over
    img = load_image(chelsea_jpeg, draft_size=full.draft_size)
    # tensors only (the DataLoader-fed batch path): the in-band photo is decoded again from its path
    xs = [np.stack([to_input(img, m.preprocess)]) for m in full.members]
    got_file = full.predict_prepared(Prepared([str(photo)], [None], xs))[0].dog_probability
    det = full.detector
    named = []
    for bb, view in det.cascade.second:
        clf = default_classifier(bb).eval()
        x = to_tensor(preprocess_image(img, clf.preprocess_cfg), clf.preprocess_cfg.mean, clf.preprocess_cfg.std)
        with torch.no_grad():
            named.append((bb, clf(x[None].flip(-1) if view == "flip" else x[None])[1], None))
    want = float(det.combine(named)[0])
    assert got_bytes == pytest.approx(want, abs=1e-4)
    assert got_file == pytest.approx(want, abs=1e-4)
    assert full.loaded.cascade.loaded_backbones == [LITE2]
