"""The library as a notebook calls it: `dogbreed.predict(...)` and `Predictor` take a photo in any form a caller
holds it (a path, bytes, a file object, a PIL image of any mode, a uint8 array), alone or in a list, and refuse bad
option values and misspelt option names in one sentence, as the command line does."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dogbreed
from dogbreed.errors import ConfigError
from dogbreed.inference.options import PredictOptions
from dogbreed.predict import Predictor


def test_dogbreed_predict_stays_callable_after_its_module_is_imported(chelsea_jpeg: bytes) -> None:
    # Importing the submodule binds it over the package's function; the README's snippet calls it twice.
    first = dogbreed.predict(chelsea_jpeg, top_k=1)
    import dogbreed.predict as module  # noqa: F401 - the import itself is the point

    again = dogbreed.predict(chelsea_jpeg, top_k=1)
    assert first == again and len(again) == 1 and again[0]["verdict"] == "no_dog"


def _forms(jpeg: bytes) -> dict[str, object]:
    img = Image.open(io.BytesIO(jpeg))
    img.load()
    return {"bytes": jpeg, "bytearray": bytearray(jpeg), "memoryview": memoryview(jpeg),
            "file object": io.BytesIO(jpeg), "PIL image": img.copy(), "array": np.asarray(img),
            "lazily opened PIL image": Image.open(io.BytesIO(jpeg))}


@pytest.mark.real
def test_every_form_of_one_photo_gets_one_answer_the_same_as_its_file(default_predictor: Predictor,
                                                                       real_data: Path) -> None:
    path = real_data / "imagenet-val-dogs/n02111889-Samoyed/ILSVRC2012_val_00003808.jpg"
    want = default_predictor.predict([str(path)])[0]
    assert want.verdict == "dog"
    for name, form in _forms(path.read_bytes()).items():
        alone = dogbreed.predict(form, top_k=5)
        assert len(alone) == 1, name
        assert alone[0]["breeds"][0]["name"] == want.breeds[0].name, name
        assert abs(alone[0]["dog_probability"] - want.dog_probability) < 0.02, name
    assert len(default_predictor.predict(str(path))) == 1  # a string is one path, not its characters


@pytest.mark.real
def test_every_form_reaches_decode_worker_processes_as_a_photo(default_predictor: Predictor,
                                                               real_data: Path) -> None:
    """Found by review: with workers > 0 an array was handed on as a path ('embedded null character in path')."""
    path = real_data / "imagenet-val-dogs/n02111889-Samoyed/ILSVRC2012_val_00003808.jpg"
    forms = _forms(path.read_bytes())
    answers = list(default_predictor.iter_predict([str(path), *forms.values()], workers=1))
    assert len(answers) == 1 + len(forms)
    for name, got in zip(["path", *forms], answers, strict=True):
        assert got.error is None and got.verdict == "dog", name
        assert got.breeds[0].name == answers[0].breeds[0].name, name


@pytest.mark.real
def test_decode_workers_look_again_at_the_photo_they_were_given(default_predictor: Predictor, real_data: Path,
                                                               tmp_path: Path, chelsea_jpeg: bytes) -> None:
    """Found by QA: with workers > 0 the stages that look at a photo again (each dog of a two-dog photo is read
    again by `best`'s ensemble) decoded it from its *name*: a photo in memory (no name) lost that look, and a name
    that was another file read that file (a beagle named pug.jpg came out "Pug 97.6%")."""
    from fixtures import two_dog_photo

    img, _ = two_dog_photo(real_data)
    path = tmp_path / "two.jpg"
    img.save(path, quality=92)
    (tmp_path / "cat.jpg").write_bytes(chelsea_jpeg)
    forms = [str(path), path.read_bytes(), Image.open(path), np.asarray(Image.open(path))]

    def rows(got: list) -> list[dict]:
        return [{k: v for k, v in p.to_dict().items() if k != "path"} for p in got]

    want = rows(list(default_predictor.iter_predict(forms, workers=0)))
    assert len(want[0]["dogs"]) == 2 and all(w == want[0] for w in want)
    assert rows(list(default_predictor.iter_predict(forms, workers=1))) == want
    named = list(default_predictor.iter_predict([str(path)], names=[str(tmp_path / "cat.jpg")], workers=1))
    assert rows(named) == want[:1] and named[0].path == str(tmp_path / "cat.jpg")


def test_threads_sharing_lazily_opened_images_get_their_answers(default_predictor: Predictor,
                                                                  chelsea_jpeg: bytes, tmp_path: Path) -> None:
    """Found by QA: four threads predicting one shared list of `Image.open(path)` images got occasional error rows
    ("I/O operation on closed file"): Pillow's lazy load is not safe on two threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    for i in range(6):
        (tmp_path / f"{i}.jpg").write_bytes(chelsea_jpeg)
    for _ in range(3):
        shared = [Image.open(tmp_path / f"{i}.jpg") for i in range(6)]
        with ThreadPoolExecutor(4) as pool:
            got = [p for ps in pool.map(default_predictor.predict_images, [shared] * 4) for p in ps]
        assert [p.error for p in got] == [None] * 24
        assert {p.verdict for p in got} == {"no_dog"}


@pytest.mark.real
def test_dogbreed_predict_loads_a_model_dir_again_once_it_changed(real_data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by QA: a notebook's adapt -> predict -> add-breed --overwrite -> predict kept answering with the first
    model (cached by the path's text), and a relative path kept its first folder's model after a chdir."""
    from dogbreed.models import default_classifier, save_model_dir

    photo = str(real_data / "imagenet-val-dogs/n02111889-Samoyed/ILSVRC2012_val_00003808.jpg")
    clf = default_classifier("efficientnet_lite0")
    save_model_dir(clf, tmp_path / "m")
    assert dogbreed.predict(photo, model=str(tmp_path / "m"))[0]["verdict"] == "dog"
    save_model_dir(clf, tmp_path / "m", decision={"uncertain_threshold": 1.0})  # every breed now "uncertain"
    assert dogbreed.predict(photo, model=str(tmp_path / "m"))[0]["verdict"] == "uncertain_breed"
    save_model_dir(clf, tmp_path / "other" / "m")
    monkeypatch.chdir(tmp_path)
    assert dogbreed.predict(photo, model="m")[0]["verdict"] == "uncertain_breed"
    monkeypatch.chdir(tmp_path / "other")
    assert dogbreed.predict(photo, model="m")[0]["verdict"] == "dog"


@pytest.mark.parametrize("mode", ["L", "P", "LA", "La", "RGBA", "RGBa", "CMYK", "YCbCr", "I;16"])
def test_a_decoded_image_of_any_mode_is_read_as_its_rgb(default_predictor: Predictor, mode: str) -> None:
    from skimage import data as skdata

    rgb = Image.fromarray(skdata.chelsea())
    img = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    as_file = io.BytesIO()
    # premultiplied alpha ("La", "RGBa"; found by QA: "conversion from La to L not supported") saved as its plain form
    plain = {"La": "LA", "RGBa": "RGBA"}.get(mode)
    (img.convert(plain) if plain else img).convert("RGB" if mode in ("CMYK", "YCbCr") else "RGBA").save(
        as_file, format="PNG")
    (got,) = default_predictor.predict_images([img])
    (ref,) = default_predictor.predict([as_file.getvalue()])
    assert got.error is None and got.verdict == ref.verdict
    assert abs(got.dog_probability - ref.dog_probability) < 0.05


def test_what_is_no_photo_is_refused_in_one_sentence(default_predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="uint8 of shape HxW"):
        dogbreed.predict(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(TypeError, match="cannot read a photo from int"):
        default_predictor.predict([42])
    with pytest.raises(TypeError, match="binary mode"):
        dogbreed.predict(io.StringIO("not a photo"))
    # Found by QA: a number or None alone was "'int' object is not iterable"; an array or image without pixels a
    # ZeroDivisionError from the detector; bytes that are no image named the in-memory file's address.
    for thing in (42, None, 3.5):
        with pytest.raises(TypeError, match=f"cannot read a photo from {type(thing).__name__}: give a path"):
            dogbreed.predict(thing)
    with pytest.raises(ValueError, match=r"needs pixels, not shape \(0, 5\)"):
        dogbreed.predict(np.zeros((0, 5), np.uint8))
    (empty,) = default_predictor.predict_images([Image.new("RGB", (0, 5))])
    assert empty.verdict == "error" and empty.error == "an image of 0x5 pixels: nothing to look at"
    assert dogbreed.predict(b"not an image")[0]["error"] == "not a readable image (cannot identify image file)"


def test_a_batch_run_refuses_photos_in_memory(default_predictor: Predictor, tmp_path: Path,
                                              chelsea_jpeg: bytes) -> None:
    """Found by QA: run_batch took bytes and arrays as paths: error rows whose path cell held the whole bytes, and a
    CSV that Python's csv module could not read back."""
    from dogbreed.batch import run_batch

    for photo in (chelsea_jpeg, np.zeros((8, 8, 3), np.uint8), Image.new("RGB", (8, 8))):
        with pytest.raises(TypeError, match="a batch run reads paths .* not (bytes|ndarray|Image): its rows are keyed"):
            run_batch(default_predictor, [photo], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    (tmp_path / "a.jpg").write_bytes(chelsea_jpeg)
    assert run_batch(default_predictor, [tmp_path / "a.jpg"], tmp_path / "x.csv").written == 1  # a Path is a path


@pytest.mark.parametrize(("changes", "says"), [
    ({"top_k": 0}, "top_k must be a whole number of at least 1, not 0"),
    ({"top_k": "3"}, "top_k must be a whole number"),
    ({"batch_size": 0}, "batch_size must be a whole number of at least 1"),
    ({"lanes": -1}, "lanes must be a whole number of at least 1"),
    ({"dog_target_recall": 5.0}, "dog_target_recall must be a number from 0.5 to 0.999"),
    ({"dog_threshold": True}, "dog_threshold must be a number from 0.0 to 1.0"),
    ({"dog_threshold": float("nan")}, "dog_threshold must be a number"),
    ({"find_dogs": 1}, "find_dogs must be True or False"),
    ({"quality": "bset"}, "quality must be 'fast' or 'best', not 'bset' (did you mean 'best'?)"),
    ({"runtime": "onx"}, "did you mean 'onnx'"),
    ({"qualty": "best"}, "unknown prediction option 'qualty'; did you mean 'quality'?"),
    ({"dog_treshold": 0.5}, "did you mean 'dog_threshold'"),
])
def test_bad_options_are_refused_before_anything_loads(changes: dict, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        PredictOptions(**changes)
    assert says in str(e.value)
    with pytest.raises(ConfigError):
        Predictor(**changes)  # the same check, through dataclasses.replace


def test_a_loaded_predictor_refuses_a_bad_per_call_option(default_predictor: Predictor) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        default_predictor.with_options(top_k=0)
    assert PredictOptions(top_k=3, batch_size=None, lanes=None).top_k == 3


def test_an_array_of_paths_and_any_path_type_are_paths(default_predictor: Predictor, tmp_path: Path,
                                                       chelsea_jpeg: bytes) -> None:
    import os

    (tmp_path / "cat.jpg").write_bytes(chelsea_jpeg)

    class OtherPath(os.PathLike):  # e.g. py.path.local, which also has a read() method
        def __fspath__(self) -> str:
            return str(tmp_path / "cat.jpg")

        def read(self) -> str:
            return "not the photo"

    for given in (np.array([str(tmp_path / "cat.jpg")] * 2), [OtherPath()], OtherPath()):
        got = dogbreed.predict(given, top_k=1)
        assert got and all(p["verdict"] == "no_dog" and p["path"].endswith("cat.jpg") for p in got), given
    assert [p.verdict for p in default_predictor.predict([OtherPath()])] == ["no_dog"]


def test_a_folder_without_photos_is_said_not_silently_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by QA: dogbreed.predict('emptydir') returned [] without a word, where the CLI says no images were found."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photo")
    assert dogbreed.predict(tmp_path / "empty") == []
    assert f"no photos found in {tmp_path / 'empty'}" in caplog.text
