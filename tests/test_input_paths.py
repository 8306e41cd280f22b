"""Every input path that cannot be read is reported in its place, by the CLI and the library; good files still work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dogbreed.cli import app
from dogbreed.fileio import path_problem
from dogbreed.predict import expand_inputs, predict

runner = CliRunner()
LONG_NAME = "x" * 300 + ".jpg"  # over the 255-byte limit of a file name


def _hostile_folder(tmp_path: Path, chelsea_jpeg: bytes) -> tuple[Path, dict[str, str]]:
    """A folder of one good photo and every kind of unreadable entry, with the message each must get."""
    d = tmp_path / "photos"
    d.mkdir()
    (d / "a-good.jpg").write_bytes(chelsea_jpeg)
    (d / "loop.jpg").symlink_to("loop.jpg")
    (d / "dangling.jpg").symlink_to("nowhere.jpg")
    os.mkfifo(d / "pipe.jpg")
    (d / "truncated.jpg").write_bytes(chelsea_jpeg[: len(chelsea_jpeg) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not a photo, and not named like one: skipped")
    expected = {
        "loop.jpg": "symbolic link loop",
        "dangling.jpg": "broken symbolic link (its target nowhere.jpg does not exist)",
        "pipe.jpg": "not a regular file: a named pipe (FIFO)",
        "truncated.jpg": "corrupt or truncated image",
        "empty.jpg": "empty file (0 bytes)",
    }
    return d, expected


def test_expand_inputs_never_raises_and_keeps_bad_entries(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d, expected = _hostile_folder(tmp_path, chelsea_jpeg)
    files = expand_inputs([d, LONG_NAME, str(tmp_path / "nomatch*.jpg")])
    names = [Path(f).name for f in files]
    assert names == ["a-good.jpg", "dangling.jpg", "empty.jpg", "loop.jpg", "pipe.jpg", "truncated.jpg", LONG_NAME,
                     "nomatch*.jpg"]


def test_cli_reports_each_bad_path_in_its_place(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d, expected = _hostile_folder(tmp_path, chelsea_jpeg)
    good = tmp_path / "good.jpg"
    good.write_bytes(chelsea_jpeg)
    res = runner.invoke(app, ["predict", str(good), LONG_NAME, str(d), "--format", "json"])
    assert res.exit_code == 0, res.output  # good files were predicted
    assert "Traceback" not in res.output
    out = json.loads(res.stdout)
    by_name = {Path(p["path"]).name: p for p in out}
    assert by_name["good.jpg"]["verdict"] == "no_dog" and by_name["a-good.jpg"]["verdict"] == "no_dog"
    assert by_name[LONG_NAME]["error"] == "file name too long"
    for name, message in expected.items():
        assert by_name[name]["error"].startswith(message), by_name[name]
    # The decoder's sentence is not wrapped in itself.
    assert by_name["truncated.jpg"]["error"].count("corrupt or truncated") == 1
    assert [Path(p["path"]).name for p in out][:2] == ["good.jpg", LONG_NAME]


@pytest.mark.slow
def test_cli_table_and_csv_name_the_problem(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(chelsea_jpeg)
    res = runner.invoke(app, ["predict", str(good), LONG_NAME])
    assert res.exit_code == 0, res.output
    assert f"{LONG_NAME}: ERROR file name too long" in res.stdout
    res = runner.invoke(app, ["predict", str(good), LONG_NAME, "--format", "csv", "-k", "1"])
    rows = res.stdout.strip().splitlines()
    assert rows[0].endswith(",error") and rows[-1] == f"{LONG_NAME},error,,,,,,file name too long"


def test_only_bad_paths_exit_non_zero(tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", LONG_NAME, str(tmp_path / "missing.jpg")])
    assert res.exit_code == 1
    assert "file name too long" in res.stdout and "file not found" in res.stdout


def test_library_reports_bad_paths(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d, expected = _hostile_folder(tmp_path, chelsea_jpeg)
    out = predict([str(d / "pipe.jpg"), str(d / "a-good.jpg"), LONG_NAME], top_k=1)
    assert out[0]["error"] == "not a regular file: a named pipe (FIFO)"
    assert out[1]["verdict"] == "no_dog"
    assert out[2]["error"] == "file name too long"


def test_permission_denied_is_named(tmp_path: Path, chelsea_jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(chelsea_jpeg)
    locked.chmod(0o000)
    good = tmp_path / "good.jpg"
    good.write_bytes(chelsea_jpeg)
    if os.geteuid() == 0:
        # root reads anything (and CI runs as root): make the access check answer as it would for a normal user.
        import dogbreed.fileio

        real_access = os.access
        monkeypatch.setattr(dogbreed.fileio.os, "access",
                            lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    assert path_problem(locked) == "permission denied"
    res = runner.invoke(app, ["predict", str(locked), str(good), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out[0] == {"path": str(locked), "verdict": "error", "error": "permission denied"}
    assert out[1]["verdict"] == "no_dog"


def test_a_folder_that_cannot_be_listed_gets_an_error_row(tmp_path: Path, chelsea_jpeg: bytes,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by QA: a locked sub-folder's photos were left out of a batch run without a word (exit 0), and the
    locked folder given alone said "no images found" instead of why."""
    (tmp_path / "in" / "locked").mkdir(parents=True)
    (tmp_path / "in" / "a.jpg").write_bytes(chelsea_jpeg)
    (tmp_path / "in" / "locked" / "c.jpg").write_bytes(chelsea_jpeg)
    locked = tmp_path / "in" / "locked"
    real_scandir = os.scandir

    def scandir(path):  # noqa: ANN001, ANN202 - as a user other than root meets a folder of mode 000
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    why = "a folder that cannot be listed (permission denied): its photos are left out"
    assert expand_inputs([tmp_path / "in"]) == [str(tmp_path / "in" / "a.jpg"), str(locked)]
    res = runner.invoke(app, ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    import pandas as pd

    rows = pd.read_csv(tmp_path / "r.csv")
    assert rows["path"].tolist() == [str(tmp_path / "in" / "a.jpg"), str(locked)]
    assert rows["error"].tolist()[1] == why
    res = runner.invoke(app, ["predict", str(locked), "--format", "json"])
    assert json.loads(res.stdout) == [{"path": str(locked), "verdict": "error", "error": why}]
    from dogbreed.data import load_dataset

    (tmp_path / "ds" / "beagle").mkdir(parents=True)
    (tmp_path / "ds" / "pug" / "locked").mkdir(parents=True)
    for i in range(2):
        (tmp_path / "ds" / "beagle" / f"{i}.jpg").write_bytes(chelsea_jpeg)
        (tmp_path / "ds" / "pug" / f"{i}.jpg").write_bytes(chelsea_jpeg)
    locked = tmp_path / "ds" / "pug" / "locked"
    ds = load_dataset(tmp_path / "ds")
    assert [(p.path, p.reason) for p in ds.problems] == [(str(locked), why)]


def test_batch_output_has_an_error_row_per_bad_path(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    d, expected = _hostile_folder(tmp_path, chelsea_jpeg)
    out = tmp_path / "rows.jsonl"
    res = runner.invoke(app, ["predict", str(d), LONG_NAME, "--out", str(out), "--workers", "0"])
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["a-good.jpg"]["verdict"] == "no_dog" and "error" not in rows["a-good.jpg"]
    assert rows[LONG_NAME]["error"] == "file name too long"
    for name, message in expected.items():
        assert rows[name]["error"].startswith(message), rows[name]


def test_symlinked_folders_are_read_and_their_cycles_end(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    """Found by QA: a symlinked sub-folder was skipped without a word, its photos left out of the run."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "max.jpg").write_bytes(chelsea_jpeg)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "own.jpg").write_bytes(chelsea_jpeg)
    (tree / "linked").symlink_to("../elsewhere")
    (tree / "self").symlink_to(".")  # a cycle: read once, where it leads
    (tmp_path / "elsewhere" / "up").symlink_to("..")  # leads above the tree: read too, but not the tree again
    assert expand_inputs([tree]) == [str(tree / "linked" / "max.jpg"), str(tree / "own.jpg")]
    # two links to one folder at every level (found by review: 4096 paths for one photo at 12 levels)
    for i in range(12):
        (tmp_path / "dia" / f"d{i}").mkdir(parents=True)
    for i in range(11):
        for link in "ab":
            (tmp_path / "dia" / f"d{i}" / link).symlink_to(f"../d{i + 1}")
    (tmp_path / "dia" / "d11" / "x.jpg").write_bytes(chelsea_jpeg)
    assert len(expand_inputs([tmp_path / "dia" / "d0"])) == 1


def test_a_glob_that_matches_folders_reads_them(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    """Found by QA: `'albums/20*'` matching two folders of photos said "file not found: albums/20*"."""
    for year in ("2023", "2024"):
        (tmp_path / "albums" / year).mkdir(parents=True)
        (tmp_path / "albums" / year / "rex.jpg").write_bytes(chelsea_jpeg)
    (tmp_path / "albums" / "2025.jpg").write_bytes(chelsea_jpeg)
    got = expand_inputs([str(tmp_path / "albums" / "20*")])
    assert got == [str(tmp_path / "albums" / n) for n in ("2023/rex.jpg", "2024/rex.jpg", "2025.jpg")]
    (tmp_path / "albums" / "2023" / "trip").mkdir()
    (tmp_path / "albums" / "2023" / "trip" / "c.jpg").write_bytes(chelsea_jpeg)
    for pattern in ("**", "**/*"):  # every folder below matches, and their photos too: each photo once
        got = expand_inputs([str(tmp_path / "albums" / pattern)])
        assert sorted(got) == sorted(set(got)) and len(got) == 4, pattern


@pytest.mark.parametrize(("name", "body", "says"), [
    ("excel.csv", b"\xef\xbb\xbfpath\n{photo}\n", None),  # Excel's "CSV UTF-8" starts with a byte-order mark
    ("latin1.csv", b"path\n{photo}\n{latin}\n", None),  # a file name's own bytes, not UTF-8
    ("broken.parquet", b"PAR1 not really", "not a readable Parquet file"),
])
def test_manifests_from_other_tools_are_read_or_refused_in_one_sentence(tmp_path: Path, chelsea_jpeg: bytes,
                                                                       name: str, body: bytes,
                                                                       says: str | None) -> None:
    """Found by QA: a BOM made the column `\\ufeffpath` ("no 'path' column"), and a Latin-1 manifest or a damaged
    Parquet one ended in a traceback."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(chelsea_jpeg)
    latin = bytes(tmp_path) + b"/caf\xe9.jpg"
    Path(os.fsdecode(latin)).write_bytes(chelsea_jpeg)
    manifest = tmp_path / name
    manifest.write_bytes(body.replace(b"{photo}", bytes(photo)).replace(b"{latin}", latin))
    r = runner.invoke(app, ["predict", str(manifest), "--format", "json"])
    if says is not None:
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output
        return
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["verdict"] for row in rows] == ["no_dog"] * (2 if "latin" in name else 1)
    assert rows[-1]["path"] == os.fsdecode(latin if "latin" in name else bytes(photo))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_exit_code_judges_the_whole_output_on_a_resume_too(tmp_path: Path, chelsea_jpeg: bytes,
                                                               fmt: str) -> None:
    """Found by QA: a resume whose new rows were all errors exited 1 though its output held a prediction, and a
    rerun of a finished all-error output exited 0 where its first run had exited 1."""
    (tmp_path / "cat.jpg").write_bytes(chelsea_jpeg)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    good, bad = tmp_path / f"good.{fmt}", tmp_path / f"bad.{fmt}"

    def run(out: Path, *names: str) -> int:
        return runner.invoke(app, ["predict", *(str(tmp_path / n) for n in names), "--out", str(out)]).exit_code

    assert run(good, "cat.jpg") == 0
    assert run(good, "cat.jpg", "empty.jpg") == 0  # this run's one row is an error; the output holds the cat
    assert run(bad, "empty.jpg", "text.jpg") == 1
    assert run(bad, "empty.jpg", "text.jpg") == 1  # nothing new to write: still nothing predicted
