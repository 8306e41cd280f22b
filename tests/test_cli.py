"""The command line: prediction options are declared once (`inference/options.py`) and every command that predicts
offers the same flags, built from that declaration."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from fixtures import noise_image, write_jpeg
from typer.testing import CliRunner

from dogbreed.cli import app, prediction_options
from dogbreed.inference.options import PredictOptions, cli_fields

runner = CliRunner()


def _flags(command: str) -> dict[str, list[str]]:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: sorted(p.opts + p.secondary_opts) for p in cmd.params}


def test_predict_and_serve_offer_the_same_prediction_options() -> None:
    shared = {f.name for f in cli_fields(every_command=True)}
    predict, serve = _flags("predict"), _flags("serve")
    assert shared <= set(predict) and shared <= set(serve)
    assert {n: predict[n] for n in shared} == {n: serve[n] for n in shared}
    # predict-only options come from the same declaration; serve takes top_k per request instead
    assert {f.name for f in cli_fields()} - shared == {"top_k", "batch_size", "lanes"} <= set(predict)
    assert not {"top_k", "batch_size", "lanes"} & set(serve)
    runner = CliRunner()
    helps = {c: runner.invoke(app, [c, "--help"], terminal_width=200).output for c in ("predict", "serve")}
    for f in cli_fields(every_command=True):
        flag = f.metadata["flags"][0].split("/")[0] if f.metadata["flags"] else "--" + f.name.replace("_", "-")
        assert flag in helps["predict"] and flag in helps["serve"], flag


def test_help_shows_its_brackets() -> None:
    # The help renderer takes "[one per ...]" or "[ray]" for a style tag and drops it unless escaped.
    import re

    out = re.sub(r"[\s│]+", " ", CliRunner().invoke(app, ["predict", "--help"], terminal_width=250).output)
    for words in ("dogbreed[ray]", "[as many as the cluster's CPUs", "[one per physical core"):
        assert words in out, words


def test_flags_arrive_as_one_options_object() -> None:
    got: list[PredictOptions] = []
    demo = typer.Typer()

    @demo.command()
    @prediction_options(every_command=False)
    def run(photo: str = typer.Argument(...), options: PredictOptions = None) -> None:  # type: ignore[assignment]
        got.append(options)

    r = CliRunner().invoke(demo, ["x.jpg", "--model", "imagenet", "--no-dog-cascade", "--target-recall", "0.9",
                                  "-k", "3", "--gallery", "g.safetensors"])
    assert r.exit_code == 0, r.output
    assert got == [dataclasses.replace(PredictOptions(), model="imagenet", dog_cascade=False, dog_target_recall=0.9,
                                       top_k=3, gallery="g.safetensors")]
    bad = CliRunner().invoke(demo, ["x.jpg", "--target-recall", "0.2"])  # the declared range is enforced
    assert bad.exit_code == 2
    # --dog-threshold 1.5 said "NO DOG FOUND (dog probability 99.4%)"; --device tpu printed torch's list of devices
    for flags, why in ((["--dog-threshold", "1.5"], "less than or equal to 1"),
                       (["--dog-threshold", "nan"], "Invalid value for '--dog-threshold'"),
                       (["--device", "tpu"], "device must be cpu, cuda, cuda:N, mps or auto, not 'tpu'")):
        bad = CliRunner().invoke(demo, ["x.jpg", *flags], terminal_width=200)
        assert bad.exit_code == 2 and why in bad.output, bad.output
    assert len(got) == 1


@pytest.mark.parametrize("bad", [{"dog_threshold": float("nan")}, {"dog_threshold": -0.1}, {"device": "tpu"},
                                 {"device": "cuda:x"}])
def test_options_a_notebook_passes_are_checked_too(bad: dict) -> None:
    from dogbreed.errors import ConfigError

    with pytest.raises(ConfigError, match="must be"):
        PredictOptions(**bad)
    assert PredictOptions(dog_threshold=0.0, device="cuda:1").device == "cuda:1"
    assert PredictOptions(dog_threshold=np.float32(0.5), device="mps").dog_threshold == 0.5  # a notebook's numpy


def test_an_export_not_named_onnx_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """`export --out exp/noext` wrote a file `predict --model` then could not load, after telling the user to."""
    r = runner.invoke(app, ["export", "default", "--out", str(tmp_path / "noext")])
    assert r.exit_code == 2 and "name the file .onnx" in " ".join(r.output.replace("│", " ").split())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("extra", "why"), [
    (["--per-dog"], "--per-dog writes one row per dog to --out"),
    (["--overwrite"], "without --out nothing is written"),
    (["--per-dog", "--out", "{tmp}/r.csv", "--whole-photo"], "which --whole-photo does not look for"),
    # found by QA: accepted, and rows said dogs=0 beside the verdict "dog"
    (["--per-dog", "--out", "{tmp}/r.csv", "--dog-detector", "none"], "without a dog detector (--dog-detector none)"),
    (["--per-dog", "--out", "{tmp}/r.jsonl"], "a .jsonl line already holds every dog of its photo"),
    (["--explain", "{tmp}/afile"], "is a file; give a folder"),
    # found by QA: the run's own heat-maps became inputs, and its resume stopped ("row 2 is ..., not input ...")
    (["{tmp}", "--explain", "{tmp}/heat"], "is inside the input folder"),
    (["--out", "{tmp}/adir.csv"], "is a folder; --out .csv is one file"),
    (["--out", "{tmp}/r.csv", "--format", "json"], "with --out the file's suffix (.csv, .jsonl or .parquet) decides"),
    (["--explain-breed", "Pug"], "without --explain no heat-map is drawn"),
])
def test_options_that_cannot_work_together_say_so_in_one_sentence(tmp_path: Path, chelsea_jpeg: bytes,
                                                                  extra: list[str], why: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.csv").mkdir()
    (tmp_path / "cat.jpg").write_bytes(chelsea_jpeg)
    r = runner.invoke(app, ["predict", str(tmp_path / "cat.jpg"), *(a.format(tmp=tmp_path) for a in extra)])
    assert r.exit_code == 2, r.output
    assert why in " ".join(r.output.replace("│", " ").split()) and "Traceback" not in r.output


def test_fit_dog_detector_refuses_the_same_photos_on_both_sides_and_a_folder_as_out(tmp_path: Path) -> None:
    """Found by QA: the same folder as --dogs and --not-dogs fitted a detector that says 50% to every photo;
    `--out dir/` wrote dir.json beside the folder. Both are refused before the fit."""
    from PIL import Image

    (tmp_path / "p").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i * 60, 90, 30)).save(tmp_path / "p" / f"{i}.jpg")
    r = CliRunner().invoke(app, ["fit-dog-detector", "--dogs", str(tmp_path / "p"), "--not-dogs",
                                 str(tmp_path / "p"), "--out", str(tmp_path / "det")])
    assert r.exit_code == 2 and "3 photos are in both --dogs and --not-dogs" in " ".join(r.output.split())
    (tmp_path / "q").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "q" / "a.jpg")
    r = CliRunner().invoke(app, ["fit-dog-detector", "--dogs", str(tmp_path / "p"), "--not-dogs",
                                 str(tmp_path / "q"), "--out", str(tmp_path) + "/"])
    assert r.exit_code == 2 and "is a folder; give the detector's file name" in " ".join(r.output.split())


def test_commands_writing_a_model_file_keep_one_already_there_unless_overwrite(tmp_path: Path) -> None:
    """Found by QA: `fit-dog-detector --out m/model` wrote over an adapted model's model.json, `gallery build` over
    a gallery and `export` over any file, without a word. Each is refused before the slow work."""
    from PIL import Image

    for side in ("dogs/beagle", "not"):
        (tmp_path / side).mkdir(parents=True)
        Image.new("RGB", (32, 32), (90, 60 if side == "not" else 200, 30)).save(tmp_path / side / "a.jpg")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text('{"mine": true}')
    (tmp_path / "g.safetensors").write_bytes(b"a gallery")
    (tmp_path / "notes.onnx").write_bytes(b"not ours")
    for args, kept in ((["fit-dog-detector", "--dogs", str(tmp_path / "dogs"), "--not-dogs", str(tmp_path / "not"),
                         "--out", str(tmp_path / "m" / "model")], tmp_path / "m" / "model.json"),
                       (["gallery", "build", "--data", str(tmp_path / "dogs"), "--out", str(tmp_path / "g")],
                        tmp_path / "g.safetensors"),
                       (["export", "default", "--out", str(tmp_path / "notes.onnx")], tmp_path / "notes.onnx")):
        before = kept.read_bytes()
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        assert f"{kept} already exists: give another --out, or --overwrite" in " ".join(r.output.split())
        assert kept.read_bytes() == before
    r = CliRunner().invoke(app, ["gallery", "build", "--data", str(tmp_path / "dogs"), "--out", str(tmp_path / "g"),
                                 "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.safetensors").read_bytes() != b"a gallery"


def test_card_says_which_prediction_options_do_not_change_it(tmp_path: Path) -> None:
    """Found by QA: `card --dog-threshold 0.99 --whole-photo --no-breed-cascade` gave the very card of no options,
    without a word: the card scores the breed model on whole photos."""
    r = CliRunner().invoke(app, ["card", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "c"),
                                 "--dog-threshold", "0.99", "--whole-photo"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "--dog-threshold, --whole-photo do not change a card" in text
    r = CliRunner().invoke(app, ["card", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "do not change a card" not in r.output and "does not change" not in r.output


# What a process run as the installed `dogbreed` command reports at its end: the atexit handlers ran (ATEXIT), and
# whether Python's teardown ran (TEARDOWN: a module global's finaliser, which `os._exit` never reaches).
_ENDING = ("import atexit, os, sys\n"
           "class Teardown:\n"
           "    def __del__(self):\n"
           "        os.write(2, b'TEARDOWN\\n')\n"
           "kept = Teardown()\n"
           "atexit.register(lambda: os.write(2, b'ATEXIT\\n'))\n"
           "from dogbreed.cli import run\n"
           "sys.argv = ['dogbreed', *sys.argv[1:]]\n"
           "run()\n")


def _ending(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _ENDING, *argv], capture_output=True, text=True, timeout=300)


def test_a_finished_prediction_ends_the_process_without_python_teardown(tmp_path: Path) -> None:
    """Python's teardown took 0.3 s of every `dogbreed predict` (a third of a one-photo call): once predict has
    written its answers the installed command flushes, runs the atexit handlers and leaves. Every answer is still
    there, on stdout or in --out, and the exit code is predict's."""
    for i in range(3):
        write_jpeg(tmp_path / "in" / f"p{i}.jpg", noise_image(96, 80, seed=i))
    (tmp_path / "in" / "bad.jpg").write_text("<html>")
    done = _ending("predict", str(tmp_path / "in"), "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(Path(r["path"]).name for r in json.loads(done.stdout)) == ["bad.jpg", "p0.jpg", "p1.jpg", "p2.jpg"]
    assert "ATEXIT" in done.stderr and "TEARDOWN" not in done.stderr
    out = tmp_path / "rows.csv"
    done = _ending("predict", str(tmp_path / "in"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 5 and "TEARDOWN" not in done.stderr
    # no stdout at all (`>&-`, a daemon): the rows are written and the exit is Python's own, code 0 as before
    closed = subprocess.run([sys.executable, "-c", "import sys; sys.stdout = None\n" + _ENDING, "predict",
                             str(tmp_path / "in"), "--out", str(tmp_path / "closed.csv")],
                            capture_output=True, text=True, timeout=300)
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr[-2000:]
    assert len((tmp_path / "closed.csv").read_text().splitlines()) == 5
    # no stderr (`2>&-`): the progress bar and the message about the unreadable photo crashed the command
    quiet = subprocess.run([sys.executable, "-c", "import sys; sys.stderr = None\n" + _ENDING, "predict",
                            str(tmp_path / "in"), "--format", "json"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and len(json.loads(quiet.stdout)) == 4 and quiet.stderr == "ATEXIT\n"
    # every photo unreadable: still answered (an error row each), exit code 1 as before
    done = _ending("predict", str(tmp_path / "in" / "bad.jpg"), "--format", "json")
    assert done.returncode == 1 and "error" in json.loads(done.stdout)[0]
    assert "ATEXIT" in done.stderr and "TEARDOWN" not in done.stderr


def test_other_endings_exit_as_python_does(tmp_path: Path) -> None:
    """A command other than predict, or a predict that stops before answering, runs Python's whole exit."""
    done = _ending("breeds")
    assert done.returncode == 0 and "Golden retriever" in done.stdout
    assert "ATEXIT" in done.stderr and "TEARDOWN" in done.stderr
    (tmp_path / "empty").mkdir()
    done = _ending("predict", str(tmp_path / "empty"))
    assert done.returncode == 2 and "no images found" in done.stderr and "TEARDOWN" in done.stderr
