"""Training input checks (train/config.py, train/run.py): typed settings, data a run can learn from, resume rules,
and failed runs that leave nothing misleading behind."""

from __future__ import annotations

import json
import re
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


def test_scientific_notation_is_a_number(tmp_path: Path) -> None:
    """Found by QA: PyYAML reads 1e-3 (no dot) as text, so `--set lr=1e-3` and `lr: 3e-4` in a preset were refused
    with "expected a number, got '1e-3'"."""
    cfg = train.load_preset("transfer_lite0", ["lr=1e-3", "weight_decay=5E-5", "max_epochs=1e1",
                                               "split.ratios=[8e-1,1e-1,1e-1]"])
    assert (cfg.lr, cfg.weight_decay, cfg.max_epochs, cfg.split.ratios) == (0.001, 5e-5, 10, (0.8, 0.1, 0.1))
    assert isinstance(cfg.max_epochs, int)
    preset = tmp_path / "mine.yaml"
    preset.write_text("base: transfer_lite0\nlr: 3e-4\nhead:\n  dropout: 2.5e-1\n")
    cfg = train.load_preset(str(preset))
    assert cfg.lr == 3e-4 and cfg.head.dropout == 0.25
    with pytest.raises(train.ConfigError, match="'batch_size': expected a whole number, got '2.5e0'"):
        train.load_preset("baseline", ["batch_size=2.5e0"])  # a whole-number setting takes only a whole number
    with pytest.raises(train.ConfigError, match="'lr': expected a number, got '1e-3x'"):
        train.load_preset("baseline", ["lr=1e-3x"])
    with pytest.raises(train.ConfigError, match="'head.dropout' must be <= 1"):
        train.load_preset("transfer_lite0", ["head.dropout=2e0"])  # and is range-checked like any number


@pytest.mark.parametrize(("preset", "setting", "key"), [
    ("transfer_lite0", "lr=.nan", "lr"),
    ("transfer_lite0", "lr=nan", "lr"),  # text float() reads as NaN
    ("transfer_lite0", "label_smoothing=.nan", "label_smoothing"),
    ("transfer_lite0", "weight_decay=.inf", "weight_decay"),
    ("transfer_lite0", "head.dropout=.nan", "head.dropout"),
    ("transfer_lite0", "schedule.warmup_epochs=.nan", "schedule.warmup_epochs"),
    ("transfer_lite0", "split.ratios=[.nan,0.5,0.5]", "split.ratios[0]"),
    ("finetune_lite0", "backbone_lr=-.inf", "backbone_lr"),
    ("baseline", "max_epochs=inf", "max_epochs"),
    ("baseline", "cnn.dense_dropout=.nan", "cnn.dense_dropout"),
    ("baseline", "augment={rotation: .inf}", "augment.rotation"),
])
def test_nan_and_inf_are_refused_naming_the_key(preset: str, setting: str, key: str) -> None:
    """Found by QA: NaN is neither < nor > a bound, so it passed every range check (`lr=.nan` ended in a torch
    traceback); inf passed those without an upper bound."""
    with pytest.raises(train.ConfigError, match=rf"^setting '{re.escape(key)}' must be a finite number, got "):
        train.load_preset(preset, [setting])


def test_a_misspelt_backbone_is_refused_before_the_data_loads(two_breeds: Path, tmp_path: Path) -> None:
    """Found by QA: `--set backbone=efficientnet_lit0` read the data, then ended in a KeyError traceback."""
    code, out = _train("--preset", "transfer_lite0", "--data", str(two_breeds), "--out", str(tmp_path),
                       "--set", "backbone=efficientnet_lit0")
    assert code == 2 and "setting 'backbone': unknown backbone 'efficientnet_lit0'; did you mean " \
        "'efficientnet_lite0'?" in " ".join(out.split()), out
    assert "Traceback" not in out and list(tmp_path.iterdir()) == []
    with pytest.raises(train.ConfigError, match="unknown backbone 'mobilenet'; known: efficientnet_lite0, "
                                                ".*resnet50 or 'timm:<model>'"):
        train.load_preset("finetune_lite0", ["backbone=mobilenet"])
    with pytest.raises(train.ConfigError, match="unknown backbone 'timm: '"):
        train.load_preset("transfer_lite0", ["backbone='timm: '"])
    for name in ("efficientnet_lite1", "resnet50", "timm:resnet18"):  # timm names are timm's to check, when built
        assert train.load_preset("finetune_lite0", [f"backbone={name}"]).backbone == name
    with pytest.raises(train.ConfigError, match="unknown setting 'backbone' for a cnn preset"):
        train.load_preset("baseline", ["backbone=resnet50"])  # a CNN has no backbone to name


def test_a_base_is_read_beside_its_preset_and_a_loop_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by QA: a relative .yaml base was read from the current directory ("unknown preset 'child_base.yaml'"
    from anywhere but the presets' folder), and a preset that is its own base ended in a RecursionError."""
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "common").mkdir(parents=True)
    (cfg_dir / "child.yaml").write_text("base: child_base.yaml\nlr: 0.02\n")
    (cfg_dir / "child_base.yaml").write_text("base: common/root.yaml\nweight_decay: 0.001\n")
    (cfg_dir / "common" / "root.yaml").write_text("base: transfer_lite0\nmax_epochs: 3\n")  # a bare name: packaged
    (cfg_dir / "self.yaml").write_text("base: self.yaml\n")
    (cfg_dir / "a.yaml").write_text("base: b.yaml\n")
    (cfg_dir / "b.yaml").write_text("base: a.yaml\n")
    (cfg_dir / "orphan.yaml").write_text("base: gone.yaml\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = train.load_preset(str(cfg_dir / "child.yaml"))
    assert (cfg.kind, cfg.lr, cfg.weight_decay, cfg.max_epochs, cfg.preset) == ("transfer", 0.02, 0.001, 3, "child")
    monkeypatch.chdir(tmp_path)
    assert train.load_preset("cfg/child.yaml").weight_decay == 0.001  # a relative path to the preset itself
    with pytest.raises(train.ConfigError, match=r"^preset 'cfg/self.yaml' has a loop of bases: cfg/self.yaml -> "
                                                r"self.yaml$"):
        train.load_preset("cfg/self.yaml")
    with pytest.raises(train.ConfigError, match=r"loop of bases: cfg/a.yaml -> b.yaml -> a.yaml$"):
        train.load_preset("cfg/a.yaml")
    with pytest.raises(train.ConfigError, match="unknown preset 'gone.yaml', the base of 'cfg/orphan.yaml': no such "
                                                "file"):
        train.load_preset("cfg/orphan.yaml")
    # a base written from the current folder, as it was read before, still is (found by review)
    (cfg_dir / "from_root.yaml").write_text("base: cfg/child_base.yaml\nlr: 0.03\n")
    assert train.load_preset("cfg/from_root.yaml").weight_decay == 0.001
