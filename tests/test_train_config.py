"""Training input checks (train/config.py, train/run.py): typed settings, data a run can learn from, resume rules,
and failed runs that leave nothing misleading behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dogbreed import train
from dogbreed.cli import app
from dogbreed.train import run as train_run

FAST = ["--set", "image_size=32", "--set", "batch_size=8", "--set", "cnn.dense=[8]",
        "--set", "split.ratios=[0.6,0.2,0.2]"]


def _folders(root: Path, breeds: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, n in breeds.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def two_breeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folders(tmp_path_factory.mktemp("two"), {"beagle": 6, "pug": 6})


def _train(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["train", *args])
    return res.exit_code, res.output


def test_a_typo_is_refused_with_a_hint() -> None:
    code, out = _train("--preset", "baseline", "--set", "epochs=1")
    assert code == 2 and "max_epochs" in out and "epochs" in out
    with pytest.raises(train.ConfigError, match="did you mean 'max_epochs'"):
        train.load_preset("baseline", ["epochs=1"])
    with pytest.raises(train.ConfigError, match="did you mean 'dense_dropout'"):
        train.load_preset("baseline", ["cnn.dense_dropot=0.1"])
    # inside a block too: "kernl: 5" trained kernel 3 and config.json recorded kernl: 5
    with pytest.raises(train.ConfigError, match=r"unknown block settings \['kernl'\] in blocks\[0\] \(did you mean "
                                                "'kernel'"):
        train.load_preset("baseline", ["cnn.blocks=[{filters: 8, kernl: 5}]"])
    assert train.load_preset("baseline", ["cnn.blocks=[{filters: 8, kernel: 5}]"]).cnn["blocks"][0]["kernel"] == 5


@pytest.mark.parametrize(("setting", "words"), [
    ("max_epochs=-1", ["max_epochs", ">= 1"]),
    ("lr=abc", ["lr", "a number", "abc"]),
    ("lr=0", ["lr", "> 0"]),
    ("batch_size=2.5", ["batch_size", "whole number"]),
    ("optimizer=adamx", ["optimizer", "sgd | adam | adamw"]),
    ("split.ratios=[0.5,0.6,0.1]", ["split.ratios", "summing to 1"]),
    ("head.dropout=2", ["head.dropout", "<= 1"]),
])
def test_bad_values_name_the_key_and_write_nothing(setting: str, words: list[str], two_breeds: Path,
                                                    tmp_path: Path) -> None:
    preset = "transfer_lite0" if setting.startswith("head.") else "baseline"
    code, out = _train("--preset", preset, "--data", str(two_breeds), "--out", str(tmp_path), "--set", setting)
    assert code == 2, out
    for w in words:
        assert w in out
    assert list(tmp_path.iterdir()) == []


def test_one_breed_empty_or_missing_data_fail_clearly(tmp_path: Path) -> None:
    one = _folders(tmp_path / "one", {"beagle": 8})
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = tmp_path / "runs"
    cfg = train.load_preset("baseline", {"image_size": 32})
    with pytest.raises(train.DataError, match="at least 2 breeds; found 1 \\(Beagle\\)"):
        train.train(cfg, str(one), out=runs)
    for data in (empty, tmp_path / "missing"):
        code, out = _train("--preset", "baseline", "--data", str(data), "--out", str(runs))
        assert code == 2 and str(data) in out, out
    assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.slow
def test_resume_honours_what_it_can_and_refuses_the_rest(two_breeds: Path, tmp_path: Path) -> None:
    code, out = _train("--preset", "baseline", "--data", str(two_breeds), "--out", str(tmp_path), "--epochs", "1",
                       "--set", "patience=5", *FAST)
    assert code == 0, out
    (run,) = tmp_path.iterdir()
    code, out = _train("--resume", str(run), "--set", "lr=0.5")
    assert code == 2 and "cannot change ['lr']" in out and "max_epochs" in out
    code, out = _train("--resume", str(run), "--set", "max_epoch=3")  # said the run "used other values"
    assert code == 2 and "unknown setting 'max_epoch'; did you mean 'max_epochs'?" in " ".join(out.split()), out
    code, out = _train("--resume", str(run), "--set", "max_epochs=2")
    assert code == 0, out
    assert [h["epoch"] for h in json.loads((run / "metrics.json").read_text())] == [1, 2]
    assert json.loads((run / "config.json").read_text())["max_epochs"] == 2
    assert not list(run.rglob("*.tmp*"))


@pytest.mark.slow
def test_a_failed_run_is_removed_or_marked(two_breeds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = train.load_preset("baseline", {"image_size": 32, "batch_size": 8, "max_epochs": 1, "cnn": {"dense": [8]},
                                         "split": {"ratios": [0.6, 0.2, 0.2]}})

    def broken_fit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train_run, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train.train(cfg, str(two_breeds), out=tmp_path / "a")
    assert list((tmp_path / "a").iterdir()) == []  # no checkpoint yet: nothing worth keeping
    monkeypatch.undo()

    def broken_report(*args: object, **kwargs: object) -> None:
        raise RuntimeError("report failed")

    monkeypatch.setattr(train_run, "write_run_report", broken_report)
    with pytest.raises(RuntimeError, match="report failed"):
        train.train(cfg, str(two_breeds), out=tmp_path / "b")
    (run,) = (tmp_path / "b").iterdir()
    assert "report failed" in (run / "FAILED.txt").read_text()  # checkpoints kept for --resume
    assert not list(run.rglob("*.tmp*"))
    monkeypatch.undo()
    train.train({}, resume=str(run))
    assert not (run / "FAILED.txt").exists() and (run / "report.md").is_file()
