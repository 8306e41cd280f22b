"""model.json is checked where it is read, before any weights load: found by QA, a damaged one passed the loader and
failed later as a traceback (size "224", classes "abc"), a NaN (temperature 0), nonsense answers (temperature -1),
an error row for every photo (resize "centre_crop", a 2-number mean) or was read as if known (format 9)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dogbreed.breeds import stanford_breeds
from dogbreed.cli import app
from dogbreed.errors import ModelLoadError
from dogbreed.inference.scoring import Decision
from dogbreed.models import (
    DECISION_KEYS,
    MODEL_KEYS,
    build_cnn_classifier,
    build_head,
    load_model_dir,
    save_model_dir,
)
from dogbreed.resolve import model_outline, resolve_model


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model dir as the current code writes it (CNN, 3 breeds, 32 px), to damage copies of."""
    clf = build_cnn_classifier({"blocks": [{"filters": 4}], "dense": [8]}, list(stanford_breeds())[:3], 32)
    return save_model_dir(clf, tmp_path_factory.mktemp("m") / "good",
                          decision={"temperature": 2.0, "uncertain_threshold": 0.3})


def _copy(good: Path, to: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    shutil.copytree(good, to)
    cfg = json.loads((to / "model.json").read_text())
    change(cfg)
    (to / "model.json").write_text(json.dumps(cfg))
    return to


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(cfg: dict[str, Any]) -> None:
        d = cfg
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return change


# name -> (change, what the one sentence must say besides the file)
DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "size a string": (_set("preprocess", "size", value="224"), "preprocess.size"),
    "size 0": (_set("preprocess", "size", value=0), "preprocess.size"),
    "size a float": (_set("preprocess", "size", value=32.5), "preprocess.size"),
    "temperature 0": (_set("decision", "temperature", value=0), "decision.temperature"),
    "temperature -1": (_set("decision", "temperature", value=-1), "decision.temperature"),
    "temperature NaN": (_set("decision", "temperature", value=float("nan")), "decision.temperature"),
    "threshold 1.5": (_set("decision", "uncertain_threshold", value=1.5), "decision.uncertain_threshold"),
    "threshold a string": (_set("decision", "dog_threshold", value="0.5"), "decision.dog_threshold"),
    "decision key misspelt": (_set("decision", "temprature", value=1.0), "did you mean 'temperature'?"),
    "decision a string": (_set("decision", value="fast"), "decision must be"),
    "classes a string": (_set("classes", value="abc"), "classes must be"),
    "classes empty": (_set("classes", value=[]), "classes must be"),
    "a class without a name": (_set("classes", value=[{"wnid": "n1"}] * 3), "classes[0].name"),
    "a class index a string": (_set("classes", value=[{"name": "a", "imagenet_index": "3"}] * 3),
                               "classes[0].imagenet_index"),
    "resize misspelt": (_set("preprocess", "resize", value="centre_crop"), "did you mean 'center_crop'?"),
    "interpolation misspelt": (_set("preprocess", "interpolation", value="bicubik"), "did you mean 'bicubic'?"),
    "mean of 2": (_set("preprocess", "mean", value=[0.5, 0.5]), "preprocess.mean"),
    "std with a 0": (_set("preprocess", "std", value=[0.5, 0.5, 0]), "preprocess.std"),
    "crop_pct 0": (_set("preprocess", "crop_pct", value=0), "preprocess.crop_pct"),
    "box_crop a string": (_set("preprocess", "box_crop", value="no"), "preprocess.box_crop"),
    "preprocess key misspelt": (_set("preprocess", "interpolaton", value="bilinear"),
                                "did you mean 'interpolation'?"),
    "unknown format": (_set("format", value="dogbreed-model/9"), "'dogbreed-model/9' is not one this dogbreed reads"),
    "top-level key misspelt": (_set("decison", value={}), "did you mean 'decision'?"),
    "backbone misspelt": (_set("backbone", value="efficientnet_lit0"), "did you mean 'efficientnet_lite0'?"),
    "backbone_in_weights a string": (_set("backbone_in_weights", value="yes"), "backbone_in_weights"),
    "extra a list": (_set("extra", value=[]), "extra must be"),
    "head a string": (_set("head", value="linear"), "head must be"),
    "head type misspelt": (_set("head", "type", value="liner"), "did you mean 'linear'?"),
    "head dropout 2": (_set("head", value={"type": "dropout_linear", "dropout": 2}), "head.dropout"),
    "cnn activation unknown": (_set("cnn", "activation", value="relu6"), "cnn"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_model_json_is_one_sentence_naming_file_and_key(good: Path, tmp_path: Path, name: str) -> None:
    change, phrase = DAMAGE[name]
    bad = _copy(good, tmp_path / "bad", change)
    for load in (load_model_dir, resolve_model):
        with pytest.raises(ModelLoadError) as info:
            load(str(bad))
        msg = str(info.value)
        assert str(bad / "model.json") in msg and phrase in msg and "\n" not in msg, (name, msg)


def test_model_json_is_checked_before_the_weights_are_read(good: Path, tmp_path: Path) -> None:
    bad = _copy(good, tmp_path / "bad", _set("preprocess", "size", value="224"))
    (bad / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"model\.json: preprocess\.size"):
        load_model_dir(bad)


def test_model_outline_checks_the_config_it_reads(good: Path, tmp_path: Path) -> None:
    """The Ray driver reads the outline before any worker loads the model: it refuses the same damage."""
    bad = _copy(good, tmp_path / "bad", _set("decision", "temperature", value=0))
    with pytest.raises(ModelLoadError, match="decision.temperature"):
        model_outline(str(bad))
    assert model_outline(str(good)) == (["cnn"], True)


@pytest.mark.parametrize("name", ["size a string", "temperature 0", "classes a string", "resize misspelt"])
def test_predict_exits_2_on_a_damaged_model_json(good: Path, tmp_path: Path, name: str) -> None:
    bad = _copy(good, tmp_path / "bad", DAMAGE[name][0])
    photo = tmp_path / "p.jpg"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    res = CliRunner().invoke(app, ["predict", str(photo), "--model", str(bad)])
    assert res.exit_code == 2, (res.output, res.exception)
    assert "Traceback" not in res.output and "model.json" in res.output and DAMAGE[name][1] in res.output


def test_an_unknown_key_of_the_users_own_is_said_once_and_ignored(good: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    mine = _copy(good, tmp_path / "mine", _set("notes", value="trained on my dogs"))
    with caplog.at_level(logging.WARNING, logger="dogbreed"):
        for _ in range(2):
            clf, _cfg = load_model_dir(mine)
            assert len(clf.classes) == 3
    said = [r.getMessage() for r in caplog.records if "notes" in r.getMessage()]
    assert len(said) == 1 and "extra" in said[0] and str(mine / "model.json") in said[0]


def test_models_the_current_code_writes_still_load(good: Path, tmp_path: Path) -> None:
    """A train run's dropout head (dropout up to 1 is a valid setting there), and a hand-made model.json without
    "format" (every writer has written one; it is read as the only format there has been)."""
    clf = build_cnn_classifier({"blocks": [{"filters": 4}], "dense": [8]}, list(stanford_breeds())[:3], 32)
    clf.breed_head = build_head({"type": "dropout_linear", "dropout": 1.0}, clf.backbone.spec.feature_dim, 3)
    loaded, cfg = load_model_dir(save_model_dir(clf, tmp_path / "dropout", extra={"preset": "x"}))
    assert cfg["head"] == {"type": "dropout_linear", "dropout": 1.0} and len(loaded.classes) == 3
    legacy = _copy(good, tmp_path / "legacy", lambda c: c.pop("format"))
    assert resolve_model(str(legacy)).decision == {"temperature": 2.0, "uncertain_threshold": 0.3}


def test_the_checked_keys_are_the_ones_written_and_read(good: Path) -> None:
    cfg = json.loads((good / "model.json").read_text())
    assert set(cfg) <= set(MODEL_KEYS)
    assert set(DECISION_KEYS) == {f.name for f in dataclasses.fields(Decision)}
