"""resolve_model: one resolver for every spec, and one clear ModelLoadError (CLI: exit 2, no traceback) for every
model file that cannot be loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dogbreed.breeds import stanford_breeds
from dogbreed.cli import app
from dogbreed.dogness import DogDetector
from dogbreed.errors import ModelLoadError
from dogbreed.export import export_classifier, sidecar_path
from dogbreed.models import build_cnn_classifier, model_dir_of, save_model_dir
from dogbreed.resolve import model_outline, resolve_model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny valid model dir, run dir, .onnx export and photo, to damage copies of."""
    root = tmp_path_factory.mktemp("models")
    clf = build_cnn_classifier({"blocks": [{"filters": 4}], "dense": [8]}, list(stanford_breeds())[:3], 32)
    model_dir = save_model_dir(clf, root / "model-dir", decision={"temperature": 2.0})
    run = root / "run"
    shutil.copytree(model_dir, run / "model")
    (run / "config.json").write_text("{}")
    onnx = root / "tiny.onnx"
    export_classifier(clf, onnx)
    photo = root / "photo.jpg"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    return {"model_dir": model_dir, "run": run, "onnx": onnx, "photo": photo}


def test_specs_resolve_in_one_place(files: dict[str, Path]) -> None:
    assert model_dir_of(files["run"]) == files["run"] / "model"
    assert model_dir_of(files["model_dir"]) == files["model_dir"]
    for spec in (files["run"], files["model_dir"]):
        r = resolve_model(str(spec))
        assert r.kind == "model_dir" and len(r.classifier.classes) == 3 and r.decision == {"temperature": 2.0}
    r = resolve_model(str(files["onnx"]))
    assert r.kind == "onnx" and r.classifier.backbone_name == "cnn" and len(r.classifier.classes) == 3
    default, plain = resolve_model("default"), resolve_model("imagenet")
    assert default.decision and "temperature" in default.decision and plain.decision == {}
    assert not np.allclose(default.classifier.breed_head.weight.detach(), plain.classifier.breed_head.weight.detach())
    assert len(resolve_model("imagenet", quality="best").classifiers) == 3


def _damaged(files: dict[str, Path], tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (spec, a phrase the error must contain); each is a copy of a good file with one thing wrong."""
    out: dict[str, tuple[str, str]] = {}
    for name, body in (("garbage", b"this is not a protobuf"), ("truncated", files["onnx"].read_bytes()[:300])):
        f = tmp / f"{name}.onnx"
        f.write_bytes(body)
        shutil.copy(sidecar_path(files["onnx"]), sidecar_path(f))
        out[f"{name} onnx"] = (str(f), "not a loadable ONNX model")
    lone = tmp / "lone.onnx"
    shutil.copy(files["onnx"], lone)
    out["onnx without sidecar"] = (str(lone), "no sidecar")
    for name, cut in (("empty", 0), ("truncated", 100)):
        d = tmp / f"{name}-weights"
        shutil.copytree(files["model_dir"], d)
        w = d / "model.safetensors"
        w.write_bytes(w.read_bytes()[:cut])
        out[f"{name} safetensors"] = (str(d), "model.safetensors")
    d = tmp / "empty-json"
    shutil.copytree(files["model_dir"], d)
    (d / "model.json").write_text("{}")
    out["model.json {}"] = (str(d), "missing backbone")
    d = tmp / "bad-run"
    d.mkdir()
    (d / "config.json").write_text("{}")
    out["run dir without model"] = (str(d), "has no model.json")
    out["missing path"] = (str(tmp / "nowhere"), "no such file or folder")
    return out


def test_every_damaged_model_raises_model_load_error(files: dict[str, Path], tmp_path: Path) -> None:
    for name, (spec, phrase) in _damaged(files, tmp_path).items():
        with pytest.raises(ModelLoadError) as info:
            resolve_model(spec)
        msg = str(info.value)
        assert phrase in msg and "\n" not in msg, (name, msg)
        assert ".cpp:" not in msg and "Exception from" not in msg, (name, msg)  # the runtime's words, not its source


def test_damaged_dog_detector_raises_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "det.json").write_text(json.dumps({"format": "something else"}))
    (tmp_path / "det.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ModelLoadError, match="det.safetensors: not a readable safetensors"):
        DogDetector.load(tmp_path / "det.json")
    (tmp_path / "det.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="det.json: not a readable dog detector config"):
        DogDetector.load(tmp_path / "det")
    with pytest.raises(ModelLoadError, match="need both"):
        DogDetector.load(tmp_path / "missing.json")


def test_cli_exits_2_with_one_sentence_and_no_traceback(files: dict[str, Path], tmp_path: Path) -> None:
    damaged = _damaged(files, tmp_path)
    spec, phrase = damaged["truncated safetensors"]
    photos = tmp_path / "photos" / "beagle"
    photos.mkdir(parents=True)
    shutil.copy(files["photo"], photos / "a.jpg")
    commands = {
        "predict": ["predict", "--model", spec, str(files["photo"])],
        "serve": ["serve", "--model", spec, "--port", "1"],
        "export": ["export", spec, "--out", str(tmp_path / "x.onnx")],
        "adapt": ["adapt", "--model", spec, "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "o")],
        "evaluate": ["evaluate", damaged["run dir without model"][0]],
        "predict onnx": ["predict", "--model", damaged["garbage onnx"][0], str(files["photo"])],
        "predict detector": ["predict", "--dog-detector", str(tmp_path / "nodet.json"), str(files["photo"])],
    }
    for name, args in commands.items():
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, (name, res.output, res.exception)
        assert "Traceback" not in res.output and res.output.strip(), (name, res.output)
    res = CliRunner().invoke(app, commands["predict"])
    assert phrase in res.output and spec in res.output


def test_a_runtimes_refusal_reads_in_its_own_words(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    from dogbreed.inference.detect import packaged_graph
    from dogbreed.onnxrun import _runtime_reason

    cut = tmp_path / "cut.onnx"
    cut.write_bytes(packaged_graph().read_bytes()[:50_000])
    with pytest.raises(Exception) as info:  # noqa: PT011 - OpenVINO raises its own RuntimeError subclasses
        ov.Core().read_model(str(cut))
    assert ".cpp" in str(info.value)  # what the user had been shown
    said = _runtime_reason(info.value)
    assert said and ".cpp" not in said and "Exception from" not in said


@pytest.mark.parametrize(("spec", "meant"), [("defualt", "default"), ("imagenett", "imagenet"), ("Default", "default"),
                                             ("IMAGENET", "imagenet"), ("imgnet", "imagenet")])
def test_a_misspelt_packaged_name_gets_did_you_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str,
                                                    meant: str) -> None:
    """Found by QA: `--model defualt` said only "no such file or folder"."""
    monkeypatch.chdir(tmp_path)
    for look in (resolve_model, model_outline):
        with pytest.raises(ModelLoadError, match=f"no such file or folder \\(did you mean '{meant}'\\?\\)"):
            look(spec)
    # a path is a path: no packaged name is guessed for it, nor for a folder that is there
    with pytest.raises(ModelLoadError) as info:
        resolve_model(f"runs/{spec}")
    assert "did you mean" not in str(info.value)
    (tmp_path / spec).mkdir()
    with pytest.raises(ModelLoadError, match="that folder has no model.json") as info:
        resolve_model(spec)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_model_spec_is_refused(files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        spec: str) -> None:
    """Found by QA: `--model ""` was read as the current folder, and loaded whatever model sat there."""
    for f in files["model_dir"].iterdir():
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.chdir(tmp_path)
    for look in (resolve_model, model_outline):
        with pytest.raises(ModelLoadError, match="an empty model name"):
            look(spec)
    res = CliRunner().invoke(app, ["predict", "--model", spec, str(files["photo"])])
    assert res.exit_code == 2 and "an empty model name" in res.output and "Traceback" not in res.output


def test_a_folder_holding_one_model_names_it(files: dict[str, Path], tmp_path: Path) -> None:
    """Found by QA: `--model exp/` (a folder holding only model.onnx) said only that it had no model.json. The
    folder is not taken for the model it holds (see the `resolve` docstring): the error names it."""
    def holding(name: str, *paths: str) -> Path:
        d = tmp_path / name
        for p in paths:
            (d / p).parent.mkdir(parents=True, exist_ok=True)
            if p.endswith(".onnx"):
                shutil.copy(files["onnx"], d / p)
                shutil.copy(sidecar_path(files["onnx"]), sidecar_path(d / p))
            else:
                shutil.copytree(files["model_dir"], d / p)
        return d

    for d, meant in ((holding("exp", "model.onnx"), "exp/model.onnx"),
                     (holding("runs", "run1/model"), "runs/run1"),
                     (holding("saved", "model/tiny.onnx"), "saved/model/tiny.onnx")):
        for spec in (str(d), f"{d}/"):
            for look in (resolve_model, model_outline):
                with pytest.raises(ModelLoadError, match="has no model.json") as info:
                    look(spec)
                assert f"did you mean {str(tmp_path / meant)!r}?" in str(info.value), str(info.value)
        resolve_model(str(tmp_path / meant))  # and what it names loads
    two = holding("two", "a.onnx", "b/model")
    with pytest.raises(ModelLoadError, match=r"it holds 2 models \(a.onnx, b\): give one of them"):
        resolve_model(str(two))


def test_model_breeds_is_read_from_the_config_alone(tmp_path: Path) -> None:
    """The Ray driver caps --top-k at the model's breeds before any actor loads it, as the local engine's output
    does (a Ray output of -k 200 had 80 more columns than the local one, and a resume across engines was refused)."""
    from dogbreed.resolve import model_breeds

    assert model_breeds("default") == model_breeds("imagenet") == 120
    classes = [{"wnid": None, "name": n, "imagenet_index": None} for n in ("A", "B", "C")]
    (tmp_path / "model.json").write_text(json.dumps({"format": "dogbreed-model/1", "backbone": "efficientnet_lite0",
                                                     "classes": classes}))
    assert model_breeds(tmp_path) == 3
