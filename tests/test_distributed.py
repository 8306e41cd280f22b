"""DistributedDataParallel training under torchrun: 2 CPU processes with gloo against one process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import make_folder_tree

from dogbreed import train as tr
from dogbreed.errors import ConfigError
from dogbreed.train import distributed

SRC = Path(__file__).resolve().parents[1] / "src"
SETTINGS = ["image_size=32", "batch_size=8", "lr=0.05"]
# Stated tolerance for "the same run": the processes' batches at each step are exactly the single-process batch
# split in two, so only float summation order differs (gradient all-reduce vs one mean): losses within 1e-4,
# accuracies equal.
LOSS_TOL = 1e-4


def _metrics(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _torchrun_train(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "dogbreed.cli", "train", "--nproc", "2", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path: Path) -> None:
    data = make_folder_tree(tmp_path / "data", breeds=("beagle", "pug", "My mutt"), per_breed=8)
    one = tr.train(tr.load_preset("baseline", [*SETTINGS, "max_epochs=3"]), str(data), out=tmp_path / "one")

    # 2 epochs on 2 processes, then resumed to 3, still on 2 processes.
    sets = [a for s in SETTINGS for a in ("--set", s)]
    first = _torchrun_train(["--preset", "baseline", "--data", str(data), *sets, "--epochs", "2",
                             "--out", str(tmp_path / "two")])
    assert first.returncode == 0, first.stderr[-3000:]
    runs = list((tmp_path / "two").iterdir())
    assert len(runs) == 1  # one run directory, made by rank 0 and shared with rank 1
    run = runs[0]
    assert first.stdout.strip() == str(run)  # the result printed once
    for epoch in (1, 2):  # rank 0 alone logs (and, in the same branch, checkpoints) each epoch
        assert first.stderr.count(f"epoch {epoch}/2:") == 1
    assert first.stderr.count("run saved to") == 1
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == [
        "best.json", "best.optim.safetensors", "best.safetensors",
        "last.json", "last.optim.safetensors", "last.safetensors"]
    second = _torchrun_train(["--resume", str(run), "--epochs", "3"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("resuming") == 1 and second.stderr.count("epoch 3/3:") == 1

    want, got = _metrics(one), _metrics(run)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for w, g in zip(want, got, strict=True):
        for k in ("train_loss", "val_loss"):
            assert abs(w[k] - g[k]) <= LOSS_TOL, (k, w, g)
        assert (w["train_acc"], w["val_acc"], w["lr"]) == (g["train_acc"], g["val_acc"], g["lr"])
    assert (run / "model").is_dir() and (run / "summary.json").is_file()


def test_global_batch_must_split_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    d = distributed.from_env()
    assert d.enabled and not d.is_main and d.world == 3
    assert distributed.per_rank_batch(12, d) == 4
    with pytest.raises(ConfigError, match="divisible"):
        distributed.per_rank_batch(8, d)
    assert distributed.strip_option(["train", "--nproc", "2", "--epochs", "3", "--nproc=4"], "--nproc") == [
        "train", "--epochs", "3"]
