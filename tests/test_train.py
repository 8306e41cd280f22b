"""Training, presets, transfer learning, resume, feature cache, evaluation reports.

Runs on a generated folder-per-breed dataset whose breeds differ by a visible pattern (colour, stripe
orientation), so a few epochs on 32px images are enough to beat chance clearly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dogbreed import features, train
from dogbreed.cli import app
from dogbreed.models import count_parameters, load_model_dir
from dogbreed.predict import Predictor
from dogbreed.train import strategies

CNN_PRESETS = ["baseline", "dropout", "pool6", "stride4", "filters9", "filters128", "tanh", "adam", "dense256",
               "blocks4", "gap", "batchnorm", "combined"]
# Small, fast settings for the tests; the presets' real sizes are checked in test_cnn_parameter_counts.
FAST = {"image_size": 32, "batch_size": 8, "optimizer": "adam", "lr": 0.003, "num_workers": 0,
        "split": {"ratios": [0.6, 0.2, 0.2], "seed": 0}}


def _pattern(kind: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    period = rng.integers(6, 10)
    phase = rng.integers(0, period)
    base = rng.integers(90, 140, size=3)
    img = np.zeros((size, size, 3), np.float32) + base
    if kind == "horizontal":
        img[((y + phase) // (period // 2)) % 2 == 0] = (230, 230, 230)
    elif kind == "vertical":
        img[((x + phase) // (period // 2)) % 2 == 0] = (230, 230, 230)
    elif kind == "red":
        img[..., 0] += 100
        img[..., 2] -= 60
    elif kind == "blue":
        img[..., 2] += 100
        img[..., 0] -= 60
    img += rng.normal(0, 18, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


BREEDS = {"n02099601-golden_retriever": "red", "beagle": "horizontal", "pug": "vertical", "my_backyard_mutt": "blue"}


def _copy_photos(dataset: Path, to: Path, n: int, breeds: Iterable[str] = BREEDS) -> Path:
    """The first ``n`` photos of each of ``breeds`` from ``dataset``, copied into a folder-per-breed tree at ``to``."""
    for folder in breeds:
        (to / folder).mkdir(parents=True)
        for f in sorted((dataset / folder).glob("*.jpg"))[:n]:
            (to / folder / f.name).write_bytes(f.read_bytes())
    return to


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dogs")
    rng = np.random.default_rng(0)
    for folder, kind in BREEDS.items():
        (root / folder).mkdir()
        for i in range(20):
            Image.fromarray(_pattern(kind, rng)).save(root / folder / f"{i:02d}.jpg", quality=90)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(2)


# ---------------------------------------------------------------------------------------------------------------
# Presets and parameter counts


def _expected_cnn_params(arch: dict, size: int, classes: int) -> int:
    """Architecture math, written independently of the builder: conv k*k*cin*f + f, BN 2f, dense in*out + out."""
    total, ch, side = 0, 3, size
    for b in arch["blocks"]:
        total += b["kernel"] ** 2 * ch * b["filters"] + b["filters"]
        total += 2 * b["filters"] if arch["batchnorm"] else 0
        ch = b["filters"]
        side = (side - b["pool"]) // b.get("pool_stride", b["pool"]) + 1
    width = ch if arch["gap"] else ch * side * side
    for d in arch["dense"]:
        total += width * d + d + (2 * d if arch["batchnorm"] else 0)
        width = d
    return total + width * classes + classes


@pytest.mark.parametrize("name", CNN_PRESETS)
def test_cnn_presets_build_with_exact_parameter_counts(name: str) -> None:
    cfg = train.load_preset(name)
    assert cfg.kind == "cnn" and cfg.image_size == 128
    clf = train.build_preset_model(name)
    assert count_parameters(clf) == _expected_cnn_params(clf.backbone.arch, 128, 120)
    clf.eval()
    with torch.no_grad():
        logits, imnet, feats = clf(torch.zeros(2, 3, 128, 128))
    assert logits.shape == (2, 120) and imnet.shape == (2, 0) and feats.shape[1] == clf.backbone.spec.feature_dim


def test_baseline_parameter_count_matches_hand_math() -> None:
    clf = train.build_preset_model("baseline")
    conv = 3 * 3 * 3 * 32 + 32
    dense = 64 * 64 * 32 * 128 + 128
    out = 128 * 120 + 120
    assert conv == 896 and count_parameters(clf) == conv + dense + out == 16_793_720
    # one change per preset shows in the count
    assert count_parameters(train.build_preset_model("stride4")) == 896 + 32 * 32 * 32 * 128 + 128 + out
    assert count_parameters(train.build_preset_model("gap")) == 896 + 32 * 120 + 120


def test_preset_inheritance_and_overrides() -> None:
    cfg = train.load_preset("dropout", ["cnn.dense=[64]", "lr=0.01", "image_size=32"])
    assert cfg.cnn["conv_dropout"] == 0.2 and cfg.cnn["dense"] == [64]  # base merged, override wins
    assert cfg.lr == 0.01 and cfg.image_size == 32 and cfg.optimizer == "sgd"
    assert set(CNN_PRESETS) | {"transfer_lite0", "transfer_lite2", "transfer_resnet50",
                               "finetune_lite0"} <= set(train.list_presets())
    with pytest.raises(train.ConfigError, match="did you mean 'baseline'"):
        train.load_preset("baselin")
    with pytest.raises(ValueError):
        train.parse_overrides(["lr"])


@pytest.mark.parametrize("name", ["transfer_lite0", "finetune_lite0"])
def test_transfer_presets_build(name: str) -> None:
    clf = train.build_preset_model(name)
    cfg = train.load_preset(name)
    train.set_trainable(clf, cfg)
    head = 1280 * 120 + 120
    assert count_parameters(clf.breed_head) == head
    trainable = count_parameters(clf, trainable_only=True)
    if name.startswith("transfer"):
        assert trainable == head  # frozen backbone
    else:
        assert head < trainable < count_parameters(clf.backbone) + head  # last blocks only
    with torch.no_grad():
        assert clf.eval()(torch.zeros(1, 3, 224, 224))[0].shape == (1, 120)


# ---------------------------------------------------------------------------------------------------------------
# Training runs


@pytest.fixture(scope="module")
def cnn_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("DOGBREED_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    cfg = train.load_preset("baseline", {**FAST, "max_epochs": 4, "patience": 4, "cnn": {"dense": [32]}})
    run = train.train(cfg, str(dataset), out=tmp_path_factory.mktemp("runs"))
    mp.undo()
    return run


@pytest.mark.slow
def test_cnn_training_learns_and_writes_a_complete_run(cnn_run: Path) -> None:
    hist = json.loads((cnn_run / "metrics.json").read_text())
    assert len(hist) == 4 and [h["epoch"] for h in hist] == list(range(1, 5))
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    summary = json.loads((cnn_run / "summary.json").read_text())
    assert summary["photos"] == {"train": 48, "val": 16, "test": 16}
    assert summary["test_top1"] > 0.5  # chance is 0.25 with 4 breeds
    assert summary["params"] == _expected_cnn_params(load_model_dir(cnn_run)[0].backbone.arch, 32, 4)
    for f in ("config.json", "split.csv", "metrics.csv", "report.md", "ckpt/best.safetensors",
              "ckpt/last.optim.safetensors", "ckpt/last.json", "plots/loss.png", "plots/accuracy.png",
              "eval-test/report.md", "eval-test/report.json", "eval-test/confusion.png", "model/model.json"):
        assert (cnn_run / f).stat().st_size > 0, f
    assert (cnn_run / "metrics.csv").read_text().count("\n") == 5
    report = json.loads((cnn_run / "eval-test" / "report.json").read_text())
    assert report["n"] == 16 and len(report["per_class"]) == 4 and 0 <= report["top1"] <= report["top5"] == 1.0


@pytest.mark.slow
def test_trained_run_predicts_with_the_standard_schema(cnn_run: Path, dataset: Path, chelsea_jpeg: bytes,
                                                      caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from dogbreed import fileio

    photos = sorted(dataset.glob("beagle/*.jpg"))[:3]
    pred = Predictor(model=str(cnn_run), top_k=3, dog_threshold=0.0)
    out = [p.to_dict() for p in pred.predict(photos)]
    assert [set(p) for p in out] == [{"path", "verdict", "dog_probability", "breeds", "several_breeds_likely",
                                      "dogs"}] * 3
    names = {b["name"] for p in out for b in p["breeds"]}
    assert names <= {"Golden retriever", "Beagle", "Pug", "My backyard mutt"}
    wnids = {b["name"]: b["wnid"] for p in out for b in p["breeds"]}
    assert wnids.get("My backyard mutt", None) is None and wnids.get("Beagle", "n02088364") == "n02088364"
    # A from-scratch CNN has no ImageNet head: packaged Lite0 reads dog or not beside it (it answered every photo as
    # a dog, the cat too), so a cat is no dog and the stage finds dogs in scenes for it too.
    judge = [m for m in pred.members if m.dog_only]
    assert [m.backbone for m in judge] == ["efficientnet_lite0"] and pred.finds_dogs
    assert Predictor(model=str(cnn_run)).predict([chelsea_jpeg])[0].verdict == "no_dog"
    (tmp_path / "cat.jpg").write_bytes(chelsea_jpeg)  # as a user first runs it: the CLI, default flags
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "cat.jpg"), "--model", str(cnn_run), "--format", "json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["verdict"] == "no_dog" and row["dogs"] == []
    fileio._said.discard("no-dog-check")  # said once a process: this test must see it said
    blind = Predictor(model=str(cnn_run), dog_detector="none").predict([chelsea_jpeg])[0]
    assert blind.verdict == "dog" and blind.dog_probability == 1.0  # asked to go without a dog detector
    assert "cannot tell a dog from anything else" in caplog.text  # and the user is told so, not left to guess


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(dataset: Path, tmp_path: Path) -> None:
    over = {**FAST, "max_epochs": 2, "patience": 10, "cnn": {"dense": [16]}, "run_name": "r"}
    run = train.train(train.load_preset("baseline", over), str(dataset), out=tmp_path / "a")
    first = json.loads((run / "metrics.json").read_text())
    assert len(first) == 2
    train.train({"max_epochs": 4}, resume=str(run))
    hist = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[:2] == first
    assert json.loads((run / "ckpt" / "last.json").read_text())["epoch"] == 4
    # an uninterrupted 4-epoch run gives the same numbers: nothing was lost or replayed differently
    straight = train.train(train.load_preset("baseline", {**over, "max_epochs": 4}), str(dataset), out=tmp_path / "b")
    keys = ("train_loss", "val_loss", "val_acc")
    again = json.loads((straight / "metrics.json").read_text())
    assert [h[k] for h in hist for k in keys] == pytest.approx([h[k] for h in again for k in keys], abs=1e-4)
    with pytest.raises(ValueError, match="cannot change"):
        train.train({"lr": 0.5}, resume=str(run))


@pytest.mark.slow
def test_transfer_uses_the_feature_cache(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "cache"))
    few = tmp_path / "few"
    _copy_photos(dataset, few, 6, list(BREEDS)[:3])
    computed: list[int] = []
    real_extractor = train.extractor_for

    def counting_extractor(cfg: dict) -> torch.nn.Module:
        clf = real_extractor(cfg)
        # a hook changes no weights, so the cache key (a weights fingerprint) is unchanged
        clf.register_forward_hook(lambda m, inp, out: computed.extend([1] * len(inp[0])))
        return clf

    monkeypatch.setattr(strategies, "extractor_for", counting_extractor)
    cfg = train.load_preset("transfer_lite0", {"max_epochs": 3, "feature_views": ["plain"], "feature_runtime": "torch",
                                                "split": {"ratios": [0.5, 0.25, 0.25]}})
    run = train.train(cfg, str(few), out=tmp_path / "runs")
    assert len(computed) == 18  # every photo once
    computed.clear()
    run2 = train.train(cfg, str(few), out=tmp_path / "runs")
    assert computed == []  # second run: all from the cache
    losses = [[h["train_loss"], h["val_loss"]] for h in json.loads((run / "metrics.json").read_text())]
    losses2 = [[h["train_loss"], h["val_loss"]] for h in json.loads((run2 / "metrics.json").read_text())]
    assert losses2 == losses  # same features, same seeds: the same run
    clf = strategies.extractor_for(cfg)
    clf.preprocess_cfg.autocontrast = True  # a preprocessing change must not reuse stale features
    features.extract([str(p) for p in sorted(few.rglob("*.jpg"))[:2]], clf, runtime="torch")
    assert len(computed) == 2
    # the run is a normal model dir: head on the packaged backbone, loadable by Predictor
    model_cfg = json.loads((run / "model" / "model.json").read_text())
    assert model_cfg["backbone"] == "efficientnet_lite0" and model_cfg["backbone_in_weights"] is False
    (p,) = Predictor(model=str(run)).predict([sorted(few.rglob("*.jpg"))[0]])
    assert len(p.breeds) == 3 and 0.0 <= p.dog_probability <= 1.0


# ---------------------------------------------------------------------------------------------------------------
# Evaluation, reports, CLI


def test_metrics_on_known_predictions() -> None:
    from dogbreed import evaluate as ev

    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    y = [0, 1, 1, 2, 2]
    m = ev.compute_metrics(y, probs, ["a", "b", "c"], paths=[f"{i}.jpg" for i in range(5)])
    assert m["top1"] == 0.6 and m["top5"] == 1.0
    per = {r["class"]: r for r in m["per_class"]}
    assert per["a"]["precision"] == pytest.approx(1 / 3, abs=1e-3) and per["a"]["recall"] == 1.0
    assert per["b"]["recall"] == 0.5 and per["c"]["precision"] == 1.0
    assert {(p["true"], p["predicted"], p["count"]) for p in m["most_confused"]} == {("b", "a", 1), ("c", "a", 1)}
    assert m["misclassified"][0]["path"] == "1.jpg"  # the most confident mistake first (0.6 > 0.5)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    # found by QA: a breed without a photo had precision, recall and F1 of 0.0, which are undefined
    m = ev.compute_metrics(y, np.pad(probs, ((0, 0), (0, 1))), ["a", "b", "c", "d"])
    assert {k: m["per_class"][3][k] for k in ("precision", "recall", "f1", "support")} == \
        {"precision": None, "recall": None, "f1": None, "support": 0}


def test_a_report_written_again_keeps_no_plot_of_the_last_one(tmp_path: Path) -> None:
    """Found by QA: evaluate run again with no mistake left kept the first run's misclassified.png beside it."""
    from PIL import Image

    from dogbreed import evaluate as ev

    photo = tmp_path / "p.jpg"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(photo)
    wrong = ev.compute_metrics([0, 1], np.array([[0.9, 0.1], [0.8, 0.2]]), ["a", "b"], paths=[str(photo)] * 2)
    ev.write_report(wrong, tmp_path / "r")
    assert (tmp_path / "r" / "misclassified.png").is_file()
    right = ev.compute_metrics([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"], paths=[str(photo)] * 2)
    ev.write_report(right, tmp_path / "r")
    assert not (tmp_path / "r" / "misclassified.png").exists() and (tmp_path / "r" / "confusion.png").is_file()


def test_confusion_plot_with_120_classes_shows_the_most_confused(tmp_path: Path) -> None:
    from dogbreed import evaluate as ev

    rng = np.random.default_rng(0)
    y = rng.integers(0, 120, 600)
    probs = rng.random((600, 120))
    probs[np.arange(600), y] += 0.8
    m = ev.compute_metrics(y, probs, [f"breed number {i}" for i in range(120)])
    png = ev.plot_confusion(m, tmp_path / "cm.png", max_classes=25)
    with Image.open(png) as im:
        assert im.size[0] < 2000 and im.size[1] < 2000  # readable, not a 120x120 wall
    assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_cli_evaluate_and_compare(cnn_run: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(cnn_run), "--split", "val"])
    assert res.exit_code == 0, res.output
    rep = json.loads((cnn_run / "eval-val" / "report.json").read_text())
    assert rep["n"] == 16 and (cnn_run / "eval-val" / "confusion.png").stat().st_size > 0
    res = runner.invoke(app, ["compare", str(cnn_run), str(cnn_run)])
    assert res.exit_code == 0, res.output
    assert "baseline" in res.output and "best_val_acc" in res.output


@pytest.mark.slow
def test_evaluate_leaves_out_and_names_a_photo_that_cannot_be_read(cnn_run: Path, dataset: Path,
                                                                   tmp_path: Path) -> None:
    """The loader stands the next photo in for one it cannot decode (right for training): evaluated so, an HTML page
    named .jpg was scored, listed among the misclassified, and counted in its breed's support."""
    other = tmp_path / "other"
    _copy_photos(dataset, other, 3)
    (other / "pug" / "page.jpg").write_text("<html>not a photo</html>")
    # Found by QA: an empty file, which the dataset's reading leaves out, went unnamed, and photos of breeds the
    # run does not know were skipped without a word on the screen
    (other / "pug" / "empty.jpg").write_bytes(b"")
    (other / "poodle").mkdir()
    (other / "poodle" / "a.jpg").write_bytes((dataset / "pug" / "00.jpg").read_bytes())
    res = CliRunner().invoke(app, ["evaluate", str(cnn_run), "--data", str(other)])
    assert res.exit_code == 0, res.output
    assert "2 unreadable photos left out" in res.output
    assert "(1 more of breeds this run does not know: not scored)" in res.output
    rep = json.loads((cnn_run / "eval-other" / "report.json").read_text())
    assert rep["n"] == 12 and not any("page.jpg" in m["path"] for m in rep["misclassified"])
    assert sorted(rep["info"]["photos_skipped_unreadable"]) == [str(other / "pug" / "empty.jpg"),
                                                                 str(other / "pug" / "page.jpg")]
    # what cannot be evaluated says why, not "no photos to evaluate"
    res = CliRunner().invoke(app, ["evaluate", str(cnn_run), "--split", "tset"])
    assert res.exit_code == 2 and "--split must be test, val or train, not 'tset'" in res.output
    (tmp_path / "strangers" / "poodle").mkdir(parents=True)
    (tmp_path / "strangers" / "collie").mkdir()
    for folder in ("poodle", "collie"):
        (tmp_path / "strangers" / folder / "a.jpg").write_bytes((dataset / "pug" / "00.jpg").read_bytes())
    res = CliRunner().invoke(app, ["evaluate", str(cnn_run), "--data", str(tmp_path / "strangers")])
    assert res.exit_code == 2 and "none of the 2 photos in" in res.output and "is of a breed this run knows" in \
        " ".join(res.output.split())
    # found by QA: `--data elsewhere/test` replaced the run's own held-out test report, and --split beside --data
    # was ignored
    assert CliRunner().invoke(app, ["evaluate", str(cnn_run), "--split", "val"]).exit_code == 0
    held_out = (cnn_run / "eval-val" / "report.json").read_bytes()
    (tmp_path / "elsewhere").mkdir()
    other.rename(tmp_path / "elsewhere" / "val")
    res = CliRunner().invoke(app, ["evaluate", str(cnn_run), "--data", str(tmp_path / "elsewhere" / "val")])
    assert res.exit_code == 0, res.output
    assert (cnn_run / "eval-val" / "report.json").read_bytes() == held_out
    assert json.loads((cnn_run / "eval-data-val" / "report.json").read_text())["n"] == 12
    res = CliRunner().invoke(app, ["evaluate", str(cnn_run), "--data", str(other), "--split", "val"])
    assert res.exit_code == 2 and "give one of them" in res.output


def test_training_leaves_out_and_names_photos_that_cannot_be_read(dataset: Path, tmp_path: Path) -> None:
    """Found by QA: a from-scratch CNN's own val (which picks the best epoch) and test figures scored an HTML page
    named .jpg with the next photo stood in, under the page's label, and summary.json counted it as a photo."""
    data = tmp_path / "data"
    _copy_photos(dataset, data, 5)
    for folder in BREEDS:
        (data / folder / "zz_page.jpg").write_text("<html>not a photo</html>")
    # Also found by QA: what the dataset's reading leaves out (empty, a broken link) was missing from the summary.
    (data / "beagle" / "zz_empty.jpg").write_bytes(b"")
    (data / "pug" / "zz_gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (data / "pug" / "notes.txt").write_text("not a photo, and no photo left out either")
    run = train.train(train.load_preset("gap", {**FAST, "max_epochs": 1}), str(data), out=tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(summary["photos_skipped_unreadable"]) == sorted(
        [str(data / f / "zz_page.jpg") for f in BREEDS] + [str(data / "beagle" / "zz_empty.jpg"),
                                                           str(data / "pug" / "zz_gone.jpg")])
    assert sum(summary["photos"].values()) == 20
    report = json.loads((run / "eval-test" / "report.json").read_text())
    assert not any("zz_page" in m["path"] for m in report["misclassified"]) and report["n"] == summary["photos"]["test"]


def test_unreadable_photos_are_left_out_before_the_split(dataset: Path, tmp_path: Path) -> None:
    """Found by QA: `train` split every photo, then left out the unreadable ones, so a breed could lose its only val
    or test photo to a corrupt file and the split was not `data split`'s for the same seed and ratios. A resumed run
    keeps the split.csv it saved, and still leaves out what it holds that cannot be read (a run made before)."""
    data = tmp_path / "data"
    _copy_photos(dataset, data, 4)
    for folder in BREEDS:
        (data / folder / "page.jpg").write_text("<html>not a photo</html>")
        (data / folder / "cut.jpg").write_bytes((dataset / folder / "10.jpg").read_bytes()[:300])
    manifest = tmp_path / "split.csv"
    res = CliRunner().invoke(app, ["data", "split", str(data), "--out", str(manifest), "--seed", "0",
                                   "--ratios", "0.6,0.2,0.2"])
    assert res.exit_code == 0, res.output
    over = {**FAST, "max_epochs": 1, "patience": 5, "cnn": {"dense": [8]}}
    run = train.train(train.load_preset("gap", over), str(data), out=tmp_path / "runs")
    saved = (run / "split.csv").read_bytes()
    assert saved == manifest.read_bytes()
    bad = sorted(str(data / f / n) for f in BREEDS for n in ("cut.jpg", "page.jpg"))
    assert sorted(json.loads((run / "summary.json").read_text())["photos_skipped_unreadable"]) == bad
    splits = train.inputs.recorded_split(run)
    for part in ("train", "val", "test"):  # 4 readable photos each: 2/1/1, none lost to a corrupt file
        assert len({str(s.breed) for s in splits[part]}) == len(BREEDS), part

    # A run made before this split first: its split.csv holds an unreadable photo, which resuming leaves out of it.
    old = saved + f"{data / 'pug' / 'page.jpg'},Pug,,val,\n".encode()
    (run / "split.csv").write_bytes(old)
    train.train({"max_epochs": 2}, resume=str(run))
    assert (run / "split.csv").read_bytes() == old  # read as saved, not split again
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["photos"] == {"train": 8, "val": 4, "test": 4}
    assert sorted(summary["photos_skipped_unreadable"]) == bad


@pytest.mark.slow
def test_cli_train_runs_a_preset(dataset: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "--preset", "gap", "--data", str(dataset), "--out", str(tmp_path),
                                   "--epochs", "1", "--set", "image_size=32", "--set", "batch_size=16",
                                   "--seed", "3"])
    assert res.exit_code == 0, res.output
    (run,) = tmp_path.iterdir()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["max_epochs"] == 1 and cfg["seed"] == 3 and cfg["image_size"] == 32 and cfg["preset"] == "gap"
    assert (run / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_finetune_unfreezes_only_the_last_blocks(dataset: Path, tmp_path: Path, chelsea_jpeg: bytes) -> None:
    few = tmp_path / "few"
    _copy_photos(dataset, few, 5, list(BREEDS)[:2])
    cfg = train.load_preset("finetune_lite0", {"image_size": 64, "max_epochs": 2, "batch_size": 4,
                                               "unfreeze_blocks": 1, "split": {"ratios": [0.6, 0.2, 0.2]}})
    run = train.train(cfg, str(few), out=tmp_path / "runs")
    tuned, mcfg = load_model_dir(run)
    assert mcfg["backbone_in_weights"] is True and mcfg["preprocess"]["size"] == 64
    before = train.extractor_for(cfg).backbone.body
    after = tuned.backbone.body
    assert torch.equal(before._blocks[0].state_dict()["_depthwise_conv.weight"],
                       after._blocks[0].state_dict()["_depthwise_conv.weight"])  # frozen
    assert not torch.equal(before._conv_head.weight, after._conv_head.weight)  # the last unit learned
    lr_rows = json.loads((run / "metrics.json").read_text())
    # one warm-up epoch up to the base LR, then cosine decay to zero at the last epoch
    assert [r["lr"] for r in lr_rows] == pytest.approx([cfg.lr, 0.0], abs=1e-9)
    # Its ImageNet head reads features it was not trained on: the shipped dog detector reads packaged Lite0 instead.
    pred = Predictor(model=str(run), top_k=2)
    assert [m.backbone for m in pred.members if m.dog_only] == ["efficientnet_lite0"] and pred.finds_dogs
    cat = pred.predict([chelsea_jpeg])[0]
    plain = Predictor(find_dogs=False).predict([chelsea_jpeg])[0]
    assert cat.verdict == "no_dog" and cat.dog_probability == pytest.approx(plain.dog_probability, abs=0.02)
    assert {b.name for b in cat.breeds} <= {b.name for b in tuned.classes}
    # A detector the user fitted (here a copy of the shipped one) judges there too: it had read the fine-tuned
    # backbone's own ImageNet head as if it were unchanged, with no packaged Lite0 beside it.
    from importlib import resources

    data = resources.files("dogbreed").joinpath("data")
    for suffix in (".json", ".safetensors"):
        (tmp_path / f"mine{suffix}").write_bytes(data.joinpath(f"dog_detector{suffix}").read_bytes())
    mine = Predictor(model=str(run), top_k=2, dog_detector=str(tmp_path / "mine.json"))
    assert [m.backbone for m in mine.members if m.dog_only] == ["efficientnet_lite0"] and mine.finds_dogs
    assert mine.predict([chelsea_jpeg])[0].dog_probability == pytest.approx(cat.dog_probability, abs=1e-6)


def test_a_checkpoint_is_written_whole_through_a_ctrl_c_and_a_torn_one_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C between a checkpoint's three files left epoch 2's weights beside epoch 1's record, and `--resume`
    trained epoch 2 again on them, silently, ending worse than the run it resumed. Now the Ctrl-C waits until the
    three are written; and files of two saves (a process killed outright between them) are refused on resume."""
    import os
    import signal

    from dogbreed.errors import ConfigError
    from dogbreed.train import rundir

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    rundir.save_checkpoint(ckpt, "last", net, opt, {"epoch": 1})
    assert rundir.load_checkpoint(ckpt, "last")[2]["epoch"] == 1
    epoch1 = (ckpt / "last.json").read_bytes()
    plain = rundir.atomic_write_bytes

    def interrupted(path: Path, data: bytes) -> None:  # Ctrl-C right after the weights are in place
        plain(path, data)
        if path.name == "last.safetensors":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(rundir, "atomic_write_bytes", interrupted)
    # a job started in the background (CI's, nohup's) ignores SIGINT and Python then keeps its handler out; a
    # person at a terminal has it, so the test stands it in
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            rundir.save_checkpoint(ckpt, "last", net, opt, {"epoch": 2})
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
    monkeypatch.setattr(rundir, "atomic_write_bytes", plain)
    assert rundir.load_checkpoint(ckpt, "last")[2]["epoch"] == 2  # all three files are epoch 2's
    (ckpt / "last.json").write_bytes(epoch1)  # as a process killed between the files would leave them
    with pytest.raises(ConfigError, match="torn: last.safetensors is not from the save that wrote last.json"):
        rundir.load_checkpoint(ckpt, "last")


def test_compare_refuses_what_is_no_run_and_flags_a_damaged_one(cnn_run: Path, tmp_path: Path) -> None:
    """Found by QA: a misspelt run folder gave a row of '?' and exit code 0; one truncated summary.json ended the
    whole table in a traceback."""
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a run directory" in res.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "summary.json").write_text('{"preset": ')
    res = CliRunner().invoke(app, ["compare", str(bad), str(cnn_run)])
    assert res.exit_code == 0, res.output
    assert "damaged summary.json" in res.output and cnn_run.name in res.output


@pytest.mark.slow
def test_resume_refuses_a_new_preset_data_or_folder(cnn_run: Path, dataset: Path, tmp_path: Path) -> None:
    """Found by QA: `train --resume RUN --data OTHER` (or --preset, --out) exited 0 having trained on the run's
    recorded data, and the user believed it trained on the new one."""
    from typer.testing import CliRunner

    from dogbreed.cli import app

    before = (cnn_run / "config.json").read_bytes()
    for extra, flag in ((["--data", str(tmp_path)], "--data"), (["--preset", "baseline"], "--preset"),
                        (["--out", str(tmp_path / "elsewhere")], "--out")):
        r = CliRunner().invoke(app, ["train", "--resume", str(cnn_run), *extra])
        assert r.exit_code == 2, r.output
        assert f"{flag} cannot change a resumed run" in " ".join(r.output.split())
    assert (cnn_run / "config.json").read_bytes() == before and not (tmp_path / "elsewhere").exists()
    with pytest.raises(train.ConfigError, match="--data cannot change a resumed run"):  # the library says so too
        train.train(None, data=str(tmp_path), resume=cnn_run)


def test_a_ctrl_c_before_the_first_checkpoint_says_why_the_run_is_gone(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """Found by QA: a Ctrl-C during the first epoch ended in silence (exit 130) and the run folder was gone."""
    from dogbreed.train.rundir import cleanup_on_failure

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(KeyboardInterrupt), cleanup_on_failure(run, created=True):
        raise KeyboardInterrupt
    assert not run.exists()
    said = capsys.readouterr().err
    assert f"interrupted (Ctrl-C) before the first checkpoint: nothing to resume, {run} removed" in said
