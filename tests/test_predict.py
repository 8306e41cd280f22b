from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import smooth_photo, two_dog_photo
from PIL import Image
from typer.testing import CliRunner

from dogbreed.cli import app
from dogbreed.predict import BEST_BACKBONES, PredictOptions, Predictor, expand_inputs, predict

runner = CliRunner()


def test_cat_is_not_a_dog(default_predictor: Predictor, chelsea_jpeg: bytes) -> None:
    (p,) = default_predictor.predict([chelsea_jpeg], ["chelsea.jpg"])
    assert p.verdict == "no_dog"
    assert p.dog_probability < 0.2
    assert len(p.breeds) == 5  # top-k is always there, even for no_dog


def test_blank_image_is_not_a_dog(default_predictor: Predictor, grey_jpeg: bytes) -> None:
    (p,) = default_predictor.predict([grey_jpeg])
    assert p.verdict == "no_dog"


def test_real_dogs_are_dogs_with_the_right_breed(default_predictor: Predictor, real_data: Path) -> None:
    files = sorted((real_data / "imagenet-val-dogs").glob("*/*.jpg"))[::25][:8]
    preds = default_predictor.predict(files)
    assert all(p.verdict != "no_dog" for p in preds)
    names = [f.parent.name.split("-", 1)[1].replace("_", " ").lower() for f in files]
    top5_hits = sum(n in [b.name.lower() for b in p.breeds] for n, p in zip(names, preds, strict=True))
    assert top5_hits >= 6, [(n, p.breeds[0].name) for n, p in zip(names, preds, strict=True)]


def test_several_breeds_likely_does_not_depend_on_top_k(default_predictor: Predictor, real_data: Path) -> None:
    """Whether a second breed is likely is the answer's, not the listing's: with one breed listed the CLI said
    false where the API (which cuts its lists after answering) said true."""
    files = [str(f) for f in sorted((real_data / "web-dogs").glob("*/*.jpg"))[::6]]
    one, five = default_predictor.with_options(top_k=1).predict(files), default_predictor.predict(files)
    flags = [(p.several_breeds_likely, [d.several_breeds_likely for d in p.dogs or []]) for p in five]
    assert [(p.several_breeds_likely, [d.several_breeds_likely for d in p.dogs or []]) for p in one] == flags
    assert any(f for f, _ in flags)  # some of these photos have a second breed that is likely
    assert all(len(p.breeds) == 1 for p in one)


def test_probabilities_are_sorted_and_sum_below_one(default_predictor: Predictor, chelsea_jpeg: bytes) -> None:
    (p,) = default_predictor.predict([chelsea_jpeg])
    probs = [b.probability for b in p.breeds]
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1.0 + 1e-6


def test_library_predict_keeps_order_and_reports_errors(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    good = tmp_path / "cat.jpg"
    good.write_bytes(chelsea_jpeg)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    out = predict([str(good), str(bad), str(empty), str(tmp_path / "missing.jpg")], top_k=3)
    assert [o["path"] for o in out] == [str(good), str(bad), str(empty), str(tmp_path / "missing.jpg")]
    assert out[0]["verdict"] == "no_dog" and len(out[0]["breeds"]) == 3
    assert "error" in out[1] and "error" in out[2] and "empty" in out[2]["error"]
    assert "not found" in out[3]["error"]
    assert [o["verdict"] for o in out[1:]] == ["error"] * 3  # as CSV and Parquet rows say it


def test_expand_inputs_folders_and_globs(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/1.jpg", "a/b/2.PNG", "a/notes.txt", "3.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    assert expand_inputs([tmp_path / "a"]) == [str(tmp_path / "a/1.jpg"), str(tmp_path / "a/b/2.PNG")]
    assert expand_inputs([str(tmp_path / "*.jpg")]) == [str(tmp_path / "3.jpg")]


def _folder(tmp_path: Path, chelsea_jpeg: bytes) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(chelsea_jpeg)
    (d / "corrupt.jpg").write_bytes(chelsea_jpeg[: len(chelsea_jpeg) // 3])
    return d


def test_cli_json_is_an_array_in_input_order(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d = _folder(tmp_path, chelsea_jpeg)
    res = runner.invoke(app, ["predict", str(d), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [Path(x["path"]).name for x in data] == ["cat.jpg", "corrupt.jpg"]
    assert data[0]["verdict"] == "no_dog" and "error" in data[1]


def test_cli_csv_has_one_row_per_rank(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d = _folder(tmp_path, chelsea_jpeg)
    res = runner.invoke(app, ["predict", str(d / "cat.jpg"), "--format", "csv", "-k", "3"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert {r["verdict"] for r in rows} == {"no_dog"}


def test_cli_table_says_no_dog_and_exit_code(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d = _folder(tmp_path, chelsea_jpeg)
    res = runner.invoke(app, ["predict", str(d / "cat.jpg")])
    assert res.exit_code == 0 and "NO DOG FOUND" in res.stdout
    res = runner.invoke(app, ["predict", str(d / "corrupt.jpg")])
    assert res.exit_code == 1 and "ERROR" in res.stdout


@pytest.mark.parametrize("bad_model", ["/nonexistent/run"])
def test_cli_bad_model_is_a_clear_error(bad_model: str, tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d = _folder(tmp_path, chelsea_jpeg)
    res = runner.invoke(app, ["predict", str(d / "cat.jpg"), "--model", bad_model])
    assert res.exit_code == 2
    assert "cannot load model" in res.output


def test_auto_runtime_falls_back_to_torch_when_onnx_cannot_be_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chelsea_jpeg: bytes
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DOGBREED_CACHE", str(blocker))
    with pytest.warns(RuntimeWarning, match="using PyTorch"):
        pred = Predictor(runtime="auto")
    assert isinstance(pred.members[0].model, torch.nn.Module)
    assert pred.predict([chelsea_jpeg])[0].verdict == "no_dog"
    with pytest.raises(OSError):
        Predictor(runtime="onnx")


def _schema(pred: dict) -> tuple:
    return tuple(sorted(pred)), tuple(tuple(sorted(b)) for b in pred["breeds"])


@pytest.mark.slow
def test_best_ensemble_with_tta_has_single_model_schema(tmp_path: Path) -> None:
    photos = [str(smooth_photo(tmp_path / f"{i}.jpg", i)) for i in range(2)]
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
    assert np.allclose(lp, lf, atol=1e-4)
    asym = Image.fromarray(np.concatenate([half, half], axis=1))
    assert not np.allclose(plain.scores([asym])[0], flip.scores([asym])[0], atol=1e-4)


@pytest.mark.parametrize("opts", [{}, {"find_dogs": False}, {"dog_detector": "none"}])
def test_finds_dogs_says_what_loading_does(opts: dict) -> None:
    """The Ray driver picks its output's columns with `finds_dogs` before any actor loads the model."""
    from dogbreed.inference.loading import finds_dogs, load_model

    o = PredictOptions(**opts)
    assert finds_dogs(o) == (load_model(o).finder is not None) == (opts == {})


@pytest.mark.parametrize(("backbone", "fine_tuned"), [("efficientnet_lite0", True), ("efficientnet_lite0", False),
                                                     ("cnn", True)])
def test_finds_dogs_reads_a_model_dirs_config(tmp_path: Path, backbone: str, fine_tuned: bool) -> None:
    from dogbreed.inference.loading import finds_dogs, judge_needed, model_outline

    (tmp_path / "model.json").write_text(json.dumps({"backbone": backbone, "backbone_in_weights": fine_tuned}))
    # The shipped dog detector's heads read an unchanged pretrained backbone: a fine-tuned one, or a from-scratch
    # CNN without an ImageNet head, has packaged Lite0 read dog or not beside it, and the detection stage runs.
    opts = PredictOptions(model=str(tmp_path))
    assert finds_dogs(opts)
    assert judge_needed(opts, *model_outline(opts.model, opts.quality)) is fine_tuned
    assert not finds_dogs(PredictOptions(model=str(tmp_path), dog_detector="none"))


@pytest.mark.parametrize(("backbone", "fine_tuned"), [("efficientnet_lite0", True), ("cnn", False)])
def test_a_users_dog_detector_reads_dog_or_not_beside_a_model_it_cannot_read(tmp_path: Path, backbone: str,
                                                                            fine_tuned: bool) -> None:
    """A detector fitted by `fit-dog-detector` (a Lite0 head) judges beside a fine-tuned or from-scratch model as
    the shipped one does: it had read a fine-tuned backbone's ImageNet head as if unchanged, and refused a CNN."""
    import shutil
    from importlib import resources

    from dogbreed.errors import ModelLoadError
    from dogbreed.inference.loading import chosen_detector, dog_detector_for, judge_needed

    data = resources.files("dogbreed").joinpath("data")
    for suffix in (".json", ".safetensors"):
        shutil.copyfile(str(data.joinpath(f"dog_detector{suffix}")), tmp_path / f"mine{suffix}")
    mine = str(tmp_path / "mine.json")
    opts = PredictOptions(model="default", dog_detector=mine)
    assert judge_needed(opts, [backbone], fine_tuned)
    assert dog_detector_for(opts, [backbone], fine_tuned) is None
    assert "efficientnet_lite0" in chosen_detector(opts).heads
    # One without a Lite0 head cannot judge either: it says so when loading, before any photo.
    cfg = json.loads((tmp_path / "mine.json").read_text())
    cfg["heads"].pop("efficientnet_lite0")
    cfg.pop("cascade", None)
    (tmp_path / "mine.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="no efficientnet_lite0 head"):
        dog_detector_for(opts, [backbone], fine_tuned)


@pytest.mark.slow
def test_breed_cascade_reads_unsure_dogs_again_with_the_best_ensemble(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    photos = [chelsea_jpeg] + [smooth_photo(tmp_path / f"{i}.jpg", i).read_bytes() for i in range(2)]
    plain = Predictor(find_dogs=False, dog_threshold=0.0, dog_cascade=False, breed_cascade=False)
    assert not plain.breed_cascade
    # Every row a dog (threshold 0) and unsure (threshold above any probability): each is `best`'s answer.
    every = Predictor(find_dogs=False, dog_threshold=0.0, dog_cascade=False)
    assert every.breed_cascade and every.loaded.breed_cascade.backbones == tuple(BEST_BACKBONES)
    every.decision.uncertain_threshold = 1.01
    best = Predictor(quality="best", find_dogs=False)
    assert not best.breed_cascade  # best is the ensemble already
    for got, want, first in zip(every.predict(photos), best.predict(photos), plain.predict(photos), strict=True):
        assert [b.name for b in got.breeds] == [b.name for b in want.breeds]
        assert [b.probability for b in got.breeds] == pytest.approx([b.probability for b in want.breeds], abs=2e-4)
        assert got.dog_probability == first.dog_probability  # the dog-or-not answer is not the cascade's
        assert [b.probability for b in got.breeds] != [b.probability for b in first.breeds]
    # No row unsure: Lite0's breeds stand, and the stronger members are never loaded.
    sure = Predictor(find_dogs=False, dog_threshold=0.0, dog_cascade=False)
    sure.decision.uncertain_threshold = 0.0
    assert [p.breeds for p in sure.predict(photos)] == [p.breeds for p in plain.predict(photos)]
    assert not sure.loaded.breed_cascade._load.made


@pytest.mark.slow
def test_cli_default_reads_an_unsure_dog_again_as_best_would(real_data: Path) -> None:
    """As a user first runs it: `dogbreed predict` with its default flags (the per-dog stage and the breed cascade
    on) over real dog photos; a dog Lite0 alone is clearly unsure of gets `best`'s breeds, a sure one keeps Lite0's."""
    files = [str(f) for f in sorted((real_data / "dogs-any").glob("*.jpg"))[:24]]

    def run(*flags: str) -> list[dict]:
        res = runner.invoke(app, ["predict", *files, "--format", "json", *flags])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    default, lite0, best = run(), run("--no-breed-cascade"), run("--quality", "best")
    # Photos with one dog, boxed alike by both runs, and Lite0's top breed far from the uncertain threshold (0.547)
    # on either side, so bf16 and fp32 machines pick the same ones.
    one = [i for i, p in enumerate(lite0) if len(p["dogs"]) == 1 and len(best[i]["dogs"]) == 1
           and p["dogs"][0]["box"] == best[i]["dogs"][0]["box"]]
    unsure = [i for i in one if lite0[i]["breeds"][0]["probability"] < 0.4]
    sure = [i for i in one if lite0[i]["breeds"][0]["probability"] > 0.7]
    assert unsure and sure, [p["breeds"][0]["probability"] for p in lite0]
    for i in sure:
        assert default[i]["breeds"] == lite0[i]["breeds"]
    for i in unsure:
        assert default[i]["breeds"] != lite0[i]["breeds"]
        assert default[i]["breeds"][0]["name"] == best[i]["breeds"][0]["name"], (default[i], best[i])


def test_crops_the_first_dog_hides_are_not_run_and_answers_stay_the_same(
        default_predictor: Predictor, real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real dog photos often get a second box over part of the same dog (a head, the body again): its crop is
    prepared and run only when the first candidate's crop is no dog (`dogs.crops_needed`). Skipped or run late,
    every answer is the one running every crop gives."""
    import dogbreed.predict as predict_module
    from dogbreed.inference import scoring

    files = sorted((real_data / "imagenet-val-dogs").glob("*/*.jpg"))[::6][:40]
    rows: list[int] = []
    run = scoring.run_members
    monkeypatch.setattr(scoring, "run_members", lambda m, xs, tta: rows.append(len(xs[0])) or run(m, xs, tta))

    def answers(**patch: object) -> tuple[list[str], int]:
        with monkeypatch.context() as mp:
            for name, value in patch.items():
                mp.setattr(predict_module, name, value)
            rows.clear()
            got = [json.dumps(p.to_dict(), sort_keys=True) for p in default_predictor.predict(files)]
            return got, sum(rows)

    skipped, n_skipped = answers()
    every, n_every = answers(deferred_crops=lambda regions: [])
    late, n_late = answers(crops_needed=lambda dog, regions, deferred, decision: list(deferred))
    assert n_skipped <= n_every - 5 and n_every == n_late, (n_skipped, n_every)  # run late: all of them run
    assert skipped == every
    assert late == every  # inputs prepared late from the kept crops are the ones prepared up front


def test_a_crop_that_shows_the_whole_photo_takes_the_photos_row(
        default_predictor: Predictor, real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dog filling the photo gets a box whose square crop is the photo again: no crop of its own is run, and the
    dog's answer is the one the whole photo alone gives."""
    import dogbreed.predict as predict_module
    from dogbreed.inference import decode, scoring

    files = [str(f) for f in sorted((real_data / "imagenet-val-dogs").glob("*/*.jpg"))[::6][:40]]
    p = default_predictor
    b = decode.prepare_batch(files, [m.preprocess for m in p.members], p.draft_size, keep_images=True,
                             finder=p.loaded.finder, defer=predict_module.unprepared_rows)
    same = predict_module.same_view_rows(b)
    rows: list[int] = []
    run = scoring.run_members
    monkeypatch.setattr(scoring, "run_members", lambda m, xs, tta: rows.append(len(xs[0])) or run(m, xs, tta))
    preds = p.predict_prepared(b)
    assert sum(rows) <= len(b.tensors[0]) - len(same)
    alone = Predictor(find_dogs=False).predict(files)
    checked = 0
    for pred, whole, start in zip(preds, alone, predict_module.photo_rows(b), strict=True):
        for d in pred.dogs or []:
            if start + d.row in same:
                checked += 1
                assert [x.name for x in d.breeds] == [x.name for x in whole.breeds]
                assert d.dog_probability == pytest.approx(whole.dog_probability, abs=1e-6)
    assert checked >= 5


def test_one_photo_prepares_its_whole_photo_beside_the_detector_with_the_same_inputs(
        default_predictor: Predictor, real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of one photo (the service, the latency) resizes the whole photo on another thread while the detector
    runs: the same inputs and regions as one after the other, and a failure there is still that photo's error."""
    import threading

    from dogbreed.errors import UnreadableImage
    from dogbreed.inference import decode

    p = default_predictor
    pre = [m.preprocess for m in p.members]
    photo = str(sorted((real_data / "imagenet-val-dogs").glob("*/*.jpg"))[0])
    ran_on: list[str] = []
    to_input = decode.to_input
    monkeypatch.setattr(decode, "to_input", lambda im, cfg, box=None: ran_on.append(
        threading.current_thread().name) or to_input(im, cfg, box))
    one = decode.prepare_batch([photo], pre, p.draft_size, finder=p.loaded.finder)
    beside = [n for n in ran_on if n.startswith("dogbreed-whole-photo")]
    assert len(one.regions[0]) >= 2 and len(beside) == len(pre)  # the whole photo's inputs alone, one per member
    assert len(ran_on) == len(pre) * len(one.regions[0])
    img = decode.decode(photo, draft_size=p.draft_size)
    regions, _, rows = decode.prepare_image(img, pre, p.loaded.finder)  # beside=False: all on this thread
    assert regions == one.regions[0]
    for t, member_rows in zip(one.tensors, zip(*rows, strict=True), strict=True):
        assert np.array_equal(t, np.stack(member_rows))

    def broken(im: Image.Image, cfg: object, box: object = None) -> np.ndarray:
        raise UnreadableImage("cannot resize this one")

    monkeypatch.setattr(decode, "to_input", broken)
    failed = decode.prepare_batch([photo], pre, p.draft_size, finder=p.loaded.finder)
    assert failed.errors == ["cannot resize this one"] and failed.regions == []


def test_each_dog_of_two_is_read_again_by_the_breed_cascade(
        default_predictor: Predictor, real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo with two dogs: the breed cascade reads both dogs' crops again, sure or not (`dogs.dogs_read_again`),
    and each dog's breeds are the ensemble's answer on its crop; the whole photo's row is not read for them."""
    from dogbreed.inference import decode

    canvas, _ = two_dog_photo(real_data)
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=92)
    bc = default_predictor.loaded.breed_cascade
    read: list[list[int]] = []
    outputs = bc.outputs
    monkeypatch.setattr(bc, "outputs", lambda rows, first, image: read.append(list(rows))
                        or outputs(rows, first, image))
    b = decode.prepare_batch([buf.getvalue()], [m.preprocess for m in default_predictor.members],
                             default_predictor.draft_size, keep_images=True, finder=default_predictor.loaded.finder)
    pred = default_predictor.predict_prepared(b)[0]
    assert len(pred.dogs) == 2 and len(read) == 1
    assert {d.row for d in pred.dogs} <= set(read[0]) and 0 not in read[0]
    off = Predictor(breed_cascade=False).predict_prepared(b)[0]  # Lite0 alone: the breeds the cascade replaced
    assert [d.box for d in off.dogs] == [d.box for d in pred.dogs]
    assert all([x.probability for x in d.breeds] != [x.probability for x in e.breeds]
               for d, e in zip(pred.dogs, off.dogs, strict=True))


def test_cli_default_reads_both_dogs_of_a_two_dog_photo_again(
        real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dogbreed predict PHOTO --format json` with the default flags: a two-dog photo lists both dogs, and the breed
    cascade reads both their crops again (`dogs.dogs_read_again`), as the library does."""
    from dogbreed.inference.scoring import BreedCascade

    canvas, _ = two_dog_photo(real_data)
    photo = tmp_path / "two-dogs.jpg"
    canvas.save(photo, quality=92)
    read: list[list[int]] = []
    outputs = BreedCascade.outputs
    monkeypatch.setattr(BreedCascade, "outputs", lambda self, rows, first, image: read.append(list(rows))
                        or outputs(self, rows, first, image))
    res = CliRunner().invoke(app, ["predict", str(photo), "--format", "json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert len(row["dogs"]) == 2 and len(read) == 1 and len(read[0]) >= 2 and 0 not in read[0]
    assert {d["breeds"][0]["name"] for d in row["dogs"]} == {"Golden retriever", "Shih-Tzu"}
