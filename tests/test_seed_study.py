"""bench/seed_study.py: which rows it skips, resumes or starts over, and how it reads the study's findings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import seed_study  # noqa: E402
from seed_study_report import capped, verdicts  # noqa: E402


def _ckpt(run: Path, epoch: int, stopped: bool, finished: bool) -> None:
    (run / "ckpt").mkdir(parents=True)
    (run / "ckpt" / "last.json").write_text(json.dumps({"epoch": epoch, "stopped_early": stopped}))
    if finished:
        (run / "summary.json").write_text("{}")


def test_status_skips_finished_rows_and_resumes_the_rest(tmp_path: Path) -> None:
    assert seed_study.status(tmp_path / "none", 5) == "fresh"
    (tmp_path / "killed").mkdir()  # killed before its first checkpoint: nothing to keep
    assert seed_study.status(tmp_path / "killed", 5) == "fresh"
    _ckpt(tmp_path / "capped", 1, False, True)
    assert seed_study.status(tmp_path / "capped", 1) == "done"
    assert seed_study.status(tmp_path / "capped", 10) == "resume"  # a larger cap carries it on
    _ckpt(tmp_path / "early", 7, True, True)
    assert seed_study.status(tmp_path / "early", 50) == "done"  # early stopping decided: nothing to add
    _ckpt(tmp_path / "interrupted", 3, False, False)
    assert seed_study.status(tmp_path / "interrupted", 3) == "resume"  # checkpoint, but model/eval not written


def test_every_preset_has_a_row_in_run_order() -> None:
    from dogbreed.train import list_presets

    assert sorted(seed_study.ORDER) == sorted(r.preset for r in seed_study.ROWS) == sorted(list_presets())


def test_cap_applies_to_photo_rows_only() -> None:
    assert seed_study.config_for("baseline", 2, None).max_epochs == 2
    assert seed_study.config_for("baseline", 2, None).augment == seed_study.STUDY_AUGMENT
    assert seed_study.config_for("transfer_lite0", 2, None).max_epochs > 2  # cached features: never capped


def _row(val: float, train: float, epochs: int = 1, stopped: bool = False) -> dict:
    return {"best_val_top1": val, "epochs": epochs, "stopped_early": stopped, "preset_max_epochs": 50,
            "history": [{"train_acc": train, "val_acc": val}]}


def test_verdicts_read_the_findings_and_mark_capped_rows_provisional() -> None:
    data = {"baseline": _row(0.05, 0.10, 20, True), "adam": _row(0.009, 0.01, 20, True),
            "dropout": _row(0.06, 0.07, 20, True), "batchnorm": _row(0.04, 0.30), "pool6": _row(0.08, 0.1, 20, True)}
    v = verdicts(data, seed_study.ITERATIONS)
    assert v["adam"].startswith("yes") and "provisional" not in v["adam"]
    assert v["dropout"].startswith("yes")  # gap 1 pt vs the baseline's 5
    assert v["batchnorm"].startswith("yes") and "provisional" in v["batchnorm"]  # capped: one epoch
    assert v["pool6"].startswith("yes") and "provisional" in v["pool6"]  # compared with a capped row
    assert capped(data["batchnorm"]) and not capped(data["baseline"])
