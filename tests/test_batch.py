"""Streaming, resumable batch prediction (dogbreed.batch) and the input pipeline settings (dogbreed.accel)."""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fixtures import noise_image, write_jpeg
from typer.testing import CliRunner

from dogbreed import batch
from dogbreed.batch import BatchError, iter_sources, run_batch, stream_predictions
from dogbreed.cli import app
from dogbreed.inference import sinks
from dogbreed.inference.decode import Prepared
from dogbreed.predict import Predictor, expand_inputs, get_predictor

runner = CliRunner()


@pytest.fixture()
def photos(tmp_path: Path, chelsea_jpeg: bytes) -> Path:
    """Nine photos in nested folders with names whose order is easy to get wrong, and one unreadable file."""
    d = tmp_path / "photos"
    for i, name in enumerate(["b.jpg", "b/x.jpg", "b-c/y.jpg", "a.JPG", "c/d/e.jpg", "c 2.jpg", "z.png"]):
        write_jpeg(d / name, noise_image(96 + 8 * i, 72, seed=i))
    (d / "cat.jpg").write_bytes(chelsea_jpeg)
    (d / "broken.jpg").write_bytes(chelsea_jpeg[:300])
    (d / "notes.txt").write_text("not a photo")
    return d


@pytest.fixture()
def small_batches(default_predictor: Predictor) -> Predictor:
    """The shared predictor with batches of 2, so a handful of photos makes several batches."""
    return default_predictor.with_options(batch_size=2)


def test_sources_stream_in_expand_inputs_order(photos: Path, tmp_path: Path) -> None:
    assert list(iter_sources([photos])) == expand_inputs([photos])
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,file\n1,photos/cat.jpg\n2," + str(photos / "a.JPG") + "\n")
    assert list(iter_sources([manifest], path_column="file")) == [str(photos / "cat.jpg"), str(photos / "a.JPG")]
    with pytest.raises(BatchError, match="no 'path' column"):
        list(iter_sources([manifest]))


def test_a_blank_manifest_cell_is_an_error_row_that_says_so(photos: Path, tmp_path: Path,
                                                            small_batches: Predictor) -> None:
    """It said "file not found: " with nothing after it; the row keeps its place, so a resume still counts."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,file\n1,photos/cat.jpg\n2,\n3,photos/a.JPG\n")
    got = [p.to_dict() for p in stream_predictions(small_batches, [manifest], path_column="file")]
    assert [r["verdict"] for r in got][1] == "error" and [("error" in r) for r in got] == [False, True, False]
    assert "no path given ('': a blank cell in a manifest's path column?)" == got[1]["error"]


def test_parquet_manifest(photos: Path, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    paths = expand_inputs([photos])
    pq.write_table(pa.table({"path": paths, "label": list(range(len(paths)))}), tmp_path / "m.parquet")
    assert list(iter_sources([tmp_path / "m.parquet"])) == paths


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_equals_predictor_and_bad_file_is_an_error_row(photos: Path, small_batches: Predictor,
                                                              workers: int) -> None:
    want = [p.to_dict() for p in small_batches.predict(expand_inputs([photos]))]
    got = [p.to_dict() for p in stream_predictions(small_batches, [photos], workers=workers)]
    assert got == want
    errors = [r for r in got if "error" in r]
    assert [Path(r["path"]).name for r in errors] == ["broken.jpg"]


def _endless(produced: list[int]) -> Iterator[int]:
    """0, 1, 2, ... for ever, noting in ``produced`` each number asked for (how far a consumer's helper read)."""
    i = 0
    while True:
        produced.append(i)
        yield i
        i += 1


def test_prefetched_keeps_order_raises_in_place_and_stops_when_closed() -> None:
    import threading

    assert list(batch.prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in batch.prefetched(failing()):
            got.append(x)
    assert got == [1]
    produced = []

    it = batch.prefetched(_endless(produced), depth=2)
    assert next(it) == 0
    it.close()  # the consumer stops early: the thread must stop too, not decode the rest of the input
    assert not any(t.name == "dogbreed-decode" for t in threading.enumerate())
    assert len(produced) <= 5


def test_lanes_keep_order_raise_in_place_stop_when_closed_and_bound_what_they_hold() -> None:
    import random
    import threading
    import time

    from dogbreed.inference import executors

    def slow_double(x: int) -> int:  # uneven times, so lanes finish out of order
        time.sleep(random.Random(x).random() / 200)
        return 2 * x

    assert list(executors.lanes(iter(range(40)), slow_double, 3)) == [2 * i for i in range(40)]

    def fail_at_5(x: int) -> int:
        if x == 5:
            raise ValueError("photo 5")
        return slow_double(x)

    got = []
    with pytest.raises(ValueError, match="photo 5"):
        for x in executors.lanes(iter(range(20)), fail_at_5, 2):
            got.append(x)
    assert got == [0, 2, 4, 6, 8]

    def failing():
        yield from range(3)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in executors.lanes(failing(), slow_double, 2):
            got.append(x)
    assert got == [0, 2, 4]
    produced = []

    it = executors.lanes(_endless(produced), slow_double, 2, ahead=1)
    assert next(it) == 0
    time.sleep(0.1)  # the lanes run ahead of a consumer that stops reading, but only so far
    assert len(produced) <= 1 + 2 + 1 + 1  # yielded, plus n + ahead taken, plus one the source was asked for
    it.close()
    assert not any(t.name.startswith("dogbreed-lane") for t in threading.enumerate())


def test_a_second_ctrl_c_still_lets_every_lane_finish_its_batch() -> None:
    """Ctrl-C while the lanes run, then another while they finish their batches (`timeout -s INT` sends two, the
    first to the command and the second to its group): lanes must still be done before the interrupt leaves
    `lanes`. A lane still in a session's native code when the interpreter exited aborted the process ("terminate
    called without an active exception", exit 134 instead of 130, 3 of 10 interrupted runs)."""
    import signal
    import threading
    import time

    from dogbreed.inference import executors

    started, finished, first, release = [], [], threading.Event(), threading.Event()

    def slow(x: int) -> int:
        started.append(x)
        first.set()
        release.wait(10)  # a batch in native code, until both interrupts have been sent
        finished.append(x)
        return x

    main = threading.main_thread().ident

    def interrupt() -> None:
        first.wait(10)
        time.sleep(0.1)
        signal.pthread_kill(main, signal.SIGINT)  # lands in the wait for the next answer
        time.sleep(0.2)
        signal.pthread_kill(main, signal.SIGINT)  # lands while the lanes finish their batches
        time.sleep(0.1)
        release.set()

    # Python's own Ctrl-C handler, whatever an earlier test (a server, a Ray run) left installed
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = threading.Thread(target=interrupt, daemon=True)
    done_when_it_left = None
    try:
        sender.start()
        try:
            for _ in executors.lanes(iter(range(20)), slow, 2):
                pass
        except KeyboardInterrupt:
            done_when_it_left = sorted(finished)  # at once: nothing else may finish before this is read
        sender.join(10)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after the stop
    finally:
        release.set()
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
    assert done_when_it_left is not None, "the Ctrl-C did not stop the run"
    assert started and done_when_it_left == sorted(started), "a lane was still running when the interrupt left"
    assert not any(t.name.startswith("dogbreed-lane") for t in threading.enumerate())


def test_lanes_answer_as_one_batch_at_a_time_does(photos: Path, small_batches: Predictor) -> None:
    import threading

    if small_batches.members[0].runner.model.session is None:  # a bf16 CPU's default: OpenVINO, tested below
        small_batches = Predictor(small_batches.options, precision="fp32")  # another model: loaded again
    ran_on: list[str] = []

    def recording(lanes: int) -> Predictor:
        """The shared predictor with ``lanes``, noting the thread and intra-op threads each batch ran with."""
        p = small_batches.with_options(lanes=lanes)
        real = p.predict_prepared

        def predict_prepared(b: Prepared) -> list:
            session = p.members[0].runner.model._session_here()  # each lane computes on its own core
            ran_on.append(f"{threading.current_thread().name}/{session.get_session_options().intra_op_num_threads}")
            return real(b)

        p.predict_prepared = predict_prepared  # type: ignore[method-assign]
        return p

    paths = expand_inputs([photos])
    here = f"{threading.current_thread().name}/{small_batches.members[0].runner.model.threads}"
    one = [x.to_dict() for x in recording(1).iter_predict(paths)]
    assert set(ran_on) == {here}
    ran_on.clear()
    names = [f"n{i}" for i in range(len(paths))]
    two = [x.to_dict() for x in recording(2).iter_predict(paths, names)]
    assert set(ran_on) == {"dogbreed-lane-0/1", "dogbreed-lane-1/1"}
    assert [r.pop("path") for r in two] == names
    assert [{k: v for k, v in r.items() if k != "path"} for r in one] == two
    assert [i for i, r in enumerate(two) if "error" in r] == [paths.index(str(photos / "broken.jpg"))]
    ran_on.clear()
    assert recording(2).predict(paths[:2]) and set(ran_on) == {here}  # one batch: no lanes
    assert small_batches.lanes_for(workers=2) == 1 and small_batches.lanes_for(lanes=3) == 3


def test_lanes_on_openvino_answer_as_one_batch_at_a_time_does(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 sessions (OpenVINO) run in lanes too, each lane on its own infer requests; the detection stage's finder
    and every member included."""
    pytest.importorskip("openvino")
    from dogbreed import onnxrun
    from dogbreed.inference import executors, runners

    for module in (onnxrun, runners):  # without native bf16 OpenVINO computes f32: the same code path
        monkeypatch.setattr(module, "native_bf16", lambda: True)
    from dogbreed.inference import detect

    monkeypatch.setattr(detect, "default_finder", functools.cache(detect.default_finder.__wrapped__))  # not shared
    p = Predictor(precision="bf16", batch_size=2)
    assert p.members[0].runner.model.session is None and p.loaded.finder.precision == "bf16"
    assert p.lanes_for(lanes=2) == 2
    ran: list[int] = []
    real = executors.lanes

    def counted(items, work, n, **kw):  # noqa: ANN001, ANN003, ANN202 - a spy on the real thing
        ran.append(n)
        return real(items, work, n, **kw)

    monkeypatch.setattr(executors, "lanes", counted)
    paths = expand_inputs([photos])
    one = [x.to_dict() for x in p.with_options(lanes=1).iter_predict(paths)]
    assert ran == []
    two = [x.to_dict() for x in p.with_options(lanes=2).iter_predict(paths)]
    assert ran == [2] and two == one
    assert [i for i, r in enumerate(two) if "error" in r] == [paths.index(str(photos / "broken.jpg"))]


class _Interrupt(Exception):
    pass


def _interrupt_after(pred: Predictor, calls: int, seen: list[str]) -> Predictor:
    """A predictor whose network raises on batch ``calls + 1``, recording the paths it was given."""
    real = pred.predict_prepared

    def predict_prepared(b: Prepared) -> list:
        if calls >= 0 and len(seen) >= calls * pred.batch_size:
            raise _Interrupt
        seen.extend(b.ok_paths)
        return real(b)

    p = pred.with_options()
    p.predict_prepared = predict_prepared  # type: ignore[method-assign]
    return p


def _read(out: Path) -> list[dict]:
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    if out.suffix == ".csv":
        return list(csv.DictReader(out.open()))
    import pyarrow.parquet as pq

    return pq.read_table(out).to_pylist()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_interrupted_run_resumes_without_redoing_rows(photos: Path, tmp_path: Path, small_batches: Predictor,
                                                      suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
        monkeypatch.setattr(sinks, "PART_ROWS", 2)  # a part per batch, so the interrupted run leaves some
    paths = expand_inputs([photos])
    ref = tmp_path / f"ref{suffix}"
    run_batch(small_batches, [photos], ref, workers=0)

    out = tmp_path / f"out{suffix}"
    first: list[str] = []
    with pytest.raises(_Interrupt):
        run_batch(_interrupt_after(small_batches, 2, first), [photos], out, workers=0)
    second: list[str] = []
    s = run_batch(_interrupt_after(small_batches, -1, second), [photos], out, workers=0)
    done = s.skipped
    # In lanes a batch may finish beside the interrupted one, so the rows done vary with timing, and with them
    # whether the broken photo is among those left.
    assert done >= 4 and s.written == len(paths) - done
    assert s.errors == sum(p.endswith("broken.jpg") for p in paths[done:])
    # No photo went through the network twice, and every good photo went through it once.
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(p for p in paths if not p.endswith("broken.jpg"))
    assert _read(out) == _read(ref)
    assert run_batch(small_batches, [photos], out, workers=0).written == 0  # a third run has nothing to do


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_torn_last_line_is_cut_and_redone(photos: Path, tmp_path: Path, small_batches: Predictor,
                                          suffix: str) -> None:
    ref = tmp_path / f"ref{suffix}"
    run_batch(small_batches, [photos], ref, workers=0)
    out = tmp_path / f"out{suffix}"
    lines = ref.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # killed in the middle of a write
    s = run_batch(small_batches, [photos], out, workers=0)
    assert s.skipped == (3 if suffix == ".csv" else 4)  # the CSV header is not a row
    assert out.read_text() == ref.read_text()


def test_stray_parquet_temp_part_is_ignored(photos: Path, tmp_path: Path, small_batches: Predictor) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "out.parquet"
    out.mkdir()
    (out / "part-000000.tmp").write_bytes(b"PAR1 half a part")
    s = run_batch(small_batches, [photos], out, workers=0)
    assert s.skipped == 0 and s.written == len(expand_inputs([photos]))
    assert sorted(f.name for f in out.iterdir()) == ["_dogbreed.json", "_dogbreed.lock", "part-000000.parquet"]


def test_output_of_other_inputs_or_top_k_is_refused(photos: Path, tmp_path: Path, small_batches: Predictor,
                                                    chelsea_jpeg: bytes) -> None:
    out = tmp_path / "out.jsonl"
    run_batch(small_batches, [photos / "b.jpg", photos / "cat.jpg"], out, workers=0)
    with pytest.raises(BatchError, match="other inputs"):
        run_batch(small_batches, [photos / "cat.jpg", photos / "b.jpg"], out, workers=0)
    with pytest.raises(BatchError, match="holds the answers of 2 photos but there is 1 input;"):
        run_batch(small_batches, [photos / "b.jpg"], out, workers=0)
    csv_out = tmp_path / "out.csv"
    run_batch(small_batches, [photos / "b.jpg"], csv_out, workers=0)
    with pytest.raises(BatchError, match="other columns"):
        run_batch(small_batches.with_options(top_k=3), [photos / "b.jpg"], csv_out, workers=0)
    s = run_batch(small_batches, [photos / "cat.jpg"], out, workers=0, overwrite=True)
    assert s.skipped == 0 and [r["path"] for r in _read(out)] == [str(photos / "cat.jpg")]
    with pytest.raises(BatchError, match="suffix"):
        run_batch(small_batches, [photos], tmp_path / "out.txt", workers=0)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_resumed_run_must_ask_for_the_options_of_the_first(photos: Path, tmp_path: Path, small_batches: Predictor,
                                                             suffix: str) -> None:
    """Options the rows do not show (model, quality, dog threshold, cascades) are recorded beside the output; a
    resume that asks for others stops with one sentence instead of mixing two models' answers in one file."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    from dogbreed.inference.sinks import settings_path

    out = tmp_path / f"out{suffix}"
    first = [photos / "b.jpg", photos / "cat.jpg"]
    run_batch(small_batches, first[:1], out, workers=0)
    record = json.loads(settings_path(out).read_text())
    assert record["quality"] == "fast" and record["dog_threshold"] is None and record["breed_cascade"] is True
    other = get_predictor(small_batches.options, dog_threshold=0.7)
    with pytest.raises(BatchError, match=r"with no --dog-threshold, and this run asks for --dog-threshold 0\.7"):
        run_batch(other, first, out, workers=0)
    with pytest.raises(BatchError, match="written with --breed-cascade, and this run asks for --no-breed-cascade"):
        run_batch(get_predictor(small_batches.options, breed_cascade=False), first, out, workers=0)
    s = run_batch(small_batches, first, out, workers=0)  # the first run's options: resumes
    assert (s.skipped, s.written) == (1, 1)
    s = run_batch(other, first, out, workers=0, overwrite=True)  # starting over records the new options
    assert s.skipped == 0 and json.loads(settings_path(out).read_text())["dog_threshold"] == 0.7
    settings_path(out).unlink()  # rows written before there was a record: resumed as before
    assert run_batch(small_batches, first, out, workers=0).skipped == 2
    settings_path(out).write_text("{not json")
    with pytest.raises(BatchError, match="cannot be read"):
        run_batch(small_batches, first, out, workers=0)


def test_cli_out_writes_rows_and_rerun_skips(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    res = runner.invoke(app, ["predict", str(photos), "--out", str(out), "--workers", "0"])
    assert res.exit_code == 0, res.output
    rows = _read(out)
    assert [r["path"] for r in rows] == expand_inputs([photos])
    res = runner.invoke(app, ["predict", str(photos), "--out", str(out), "--workers", "0"])
    assert res.exit_code == 0 and f"{len(rows)} already done, 0 written" in res.output


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_file_names_not_utf8_or_with_a_newline_are_written_and_resumed(tmp_path: Path, fmt: str) -> None:
    """Found by QA: a file name that is not UTF-8 ended every format's run in a UnicodeEncodeError traceback (on each
    resume too; Parquet kept no row), and a finished JSONL or Parquet output of a name with a newline could not be
    resumed ("row 2 is 'two\\nlines.jpg', not input 'two\\nlines.jpg'")."""
    import os

    d = tmp_path / "odd"
    names = [b"a.jpg", b"caf\xe9.jpg", b"two\nlines.jpg", b"z.jpg"]
    for i, raw in enumerate(names):
        write_jpeg(Path(os.fsdecode(bytes(d) + b"/" + raw)), noise_image(96, 72, seed=i))
    out = tmp_path / f"r.{fmt}"
    for done in (0, 4):
        res = runner.invoke(app, ["predict", str(d), "--out", str(out), "--workers", "0"])
        assert res.exit_code == 0, res.output
        assert f"4 inputs, {done} already done, {4 - done} written (0 errors)" in res.output
    if fmt == "jsonl":  # as it is: JSON escapes the bytes that are not UTF-8 and reads back the very path
        paths = [r["path"] for r in _read(out)]
        assert paths == expand_inputs([d]) and all(os.path.exists(p) for p in paths)
    else:  # UTF-8 text that names the bytes, as `ls -b` does; CSV on one line
        if fmt == "csv":
            with open(out, newline="", encoding="utf-8") as f:
                paths = [r["path"] for r in csv.DictReader(f)]
        else:
            paths = sinks.pyarrow_parquet().read_table(out, columns=["path"]).column(0).to_pylist()
        want = ["a.jpg", "caf\\xe9.jpg", "two lines.jpg" if fmt == "csv" else "two\nlines.jpg", "z.jpg"]
        assert paths == [str(d / n) for n in want]


def test_cli_resume_with_another_dog_threshold_stops_with_one_sentence(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    res = runner.invoke(app, ["predict", str(photos), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = out.read_text()
    res = runner.invoke(app, ["predict", str(photos), "--out", str(out), "--dog-threshold", "0.7"])
    assert res.exit_code == 2
    assert "r.csv was written with no --dog-threshold, and this run asks for --dog-threshold 0.7" in res.output
    assert out.read_text() == rows  # nothing written, nothing lost


def test_cli_json_is_exactly_json_dumps(photos: Path) -> None:
    res = runner.invoke(app, ["predict", str(photos), "--format", "json", "--workers", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert res.stdout == json.dumps(data, indent=2) + "\n"
    assert [d["path"] for d in data] == expand_inputs([photos])


def test_cli_default_runs_many_batches_in_lanes_with_the_answers_of_one_at_a_time(photos: Path) -> None:
    """As a user first runs it: default flags but small batches, so the folder is several batches and lanes run."""
    default = runner.invoke(app, ["predict", str(photos), "--format", "json", "--batch-size", "2"])
    one = runner.invoke(app, ["predict", str(photos), "--format", "json", "--batch-size", "2", "--lanes", "1"])
    assert default.exit_code == 0 and one.exit_code == 0, default.output + one.output
    assert json.loads(default.stdout) == json.loads(one.stdout)
    assert [d["path"] for d in json.loads(default.stdout)] == expand_inputs([photos])


def test_loader_settings_on_cpu_and_cuda() -> None:
    from dogbreed.accel import default_workers, loader_kwargs, resolve_precision

    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda:0") == "bf16"
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu")
    assert loader_kwargs("cpu", 1)["pin_memory"] is False
    # Pinned pages only where a CUDA device exists to copy them to.
    assert loader_kwargs("cuda", 3)["pin_memory"] is torch.cuda.is_available()
    assert default_workers("cuda") >= 1 and default_workers("cpu") == 0  # CPU: a decode thread, no process


@pytest.mark.real
def test_bf16_autocast_within_tolerance(real_data: Path) -> None:
    """The CUDA default (bf16 autocast, channels-last, non_blocking copy) through CPU autocast, against fp32."""
    from dogbreed.accel import BF16_TOLERANCE

    files = expand_inputs([real_data / "imagenet-val-dogs"])[::12][:24]
    fp32 = Predictor(runtime="torch", precision="fp32", batch_size=12).predict(files)
    bf16 = Predictor(runtime="torch", precision="bf16", batch_size=12).predict(files)
    worst, agree = 0.0, 0
    for a, b in zip(fp32, bf16, strict=True):
        pa = {x.name: x.probability for x in a.breeds}
        worst = max([worst, abs(a.dog_probability - b.dog_probability)]
                    + [abs(pa[x.name] - x.probability) for x in b.breeds if x.name in pa])
        agree += a.breeds[0].name == b.breeds[0].name
    assert worst <= BF16_TOLERANCE["max_abs_probability"]
    assert agree / len(files) >= BF16_TOLERANCE["top1_agreement"]
    assert worst > 0  # bf16 really ran (identical outputs would mean autocast was off)


def test_feature_extraction_through_the_accelerator_path(photos: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """features.extract on the torch runtime goes through accel (the CUDA path: pinned batches, non-blocking copy,
    optional bf16); bf16 features get their own cache entries and stay close to fp32."""
    from dogbreed.features import extract
    from dogbreed.models import default_classifier

    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "cache"))
    files = [str(photos / n) for n in ("cat.jpg", "a.JPG", "broken.jpg")]
    clf = default_classifier("efficientnet_lite0")
    fp32 = extract(files, clf, runtime="torch", num_workers=0)
    bf16 = extract(files, clf, runtime="torch", num_workers=0, precision="bf16")
    assert list(fp32.ok) == list(bf16.ok) == [True, True, False] and "broken" not in str(fp32.errors[0])
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 2  # one cache key per precision
    p32 = torch.from_numpy(fp32.breed_logits[:2, 0]).softmax(-1)
    p16 = torch.from_numpy(bf16.breed_logits[:2, 0]).softmax(-1)
    assert 0 < float((p32 - p16).abs().max()) <= 0.05
    again = extract(files, clf, runtime="torch", num_workers=0)  # from the cache
    assert (again.features == fp32.features).all()


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(photos: Path, tmp_path: Path,
                                                                          small_batches: Predictor) -> None:
    for out in (tmp_path / "out.csv", tmp_path / "out.jsonl", tmp_path / "out.parquet"):
        first = sinks.RowWriter(out, small_batches.top_k, dogs=True)
        with pytest.raises(BatchError, match="is being written by another run"):
            run_batch(small_batches, [photos], out, workers=0)
        first.close()
        assert run_batch(small_batches, [photos], out, workers=0).written == len(expand_inputs([photos]))


def test_a_killed_runs_forked_workers_do_not_keep_its_output_locked(tmp_path: Path) -> None:
    """Found by QA: after `kill -9` of a `--workers 2` run, its orphaned decode workers (forked, so sharing the
    lock) held the output for 5-8 s, and the resume right after was refused as "being written by another run"."""
    import subprocess
    import sys

    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from dogbreed.inference import sinks\n"
        "lock = sinks._lock(Path(sys.argv[1]))\n"
        "if os.fork() == 0:\n"
        "    time.sleep(10)\n"  # a decode worker, still running when its parent is gone
        "    os._exit(0)\n"
        "os._exit(0)\n"  # the parent, killed outright: nothing released
    )
    out = tmp_path / "r.csv"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, timeout=60)
    sinks._lock(out).close()  # at once: not "being written by another run"


def test_a_refused_resume_does_not_keep_the_output_locked(photos: Path, tmp_path: Path,
                                                          small_batches: Predictor) -> None:
    out = tmp_path / "out.csv"
    sinks.RowWriter(out, 3, settings={"model": "a"}).close()
    out.write_text(",".join(sinks.columns(3)) + "\n" + ",".join(["x"] * len(sinks.columns(3))) + "\n")
    with pytest.raises(BatchError, match="was written with --model a") as refused:
        sinks.RowWriter(out, 3, settings={"model": "b"})
    kept = refused.value  # a notebook keeps the traceback, and with it the refused writer's frame  # noqa: F841
    sinks.RowWriter(out, 3, settings={"model": "a"}).close()  # the corrected retry is not "another run"


def test_a_csv_saved_again_by_pandas_resumes(photos: Path, tmp_path: Path, small_batches: Predictor) -> None:
    out = tmp_path / "out.csv"
    run_batch(small_batches, [photos], out, workers=0)
    rows = list(csv.DictReader(out.open()))
    assert any(r["dogs"] for r in rows)
    for r in rows:  # a column with blanks comes back from pandas as floats
        r["dogs"] = f"{int(r['dogs'])}.0" if r["dogs"] else ""
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    assert run_batch(small_batches, [photos], out, workers=0).skipped == len(rows)
    rows[0]["dog"] = "two"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(BatchError, match="holds 'two', not a count"):
        run_batch(small_batches, [photos], out, workers=0)


def test_a_damaged_jsonl_line_before_the_last_is_one_sentence(photos: Path, tmp_path: Path,
                                                              small_batches: Predictor) -> None:
    out = tmp_path / "out.jsonl"
    run_batch(small_batches, [photos], out, workers=0)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + "garbage {\n" + "".join(lines[4:]))
    with pytest.raises(BatchError, match="line 4 is not JSON"):
        run_batch(small_batches, [photos], out, workers=0)


def test_jsonl_resumed_without_explain_is_refused(photos: Path, tmp_path: Path, small_batches: Predictor) -> None:
    out = tmp_path / "out.jsonl"
    paths = expand_inputs([photos])

    def explain(p) -> None:  # noqa: ANN001 - what the CLI's --explain hook does to each answer
        if p.error is None:
            p.explanation = "heat/" + Path(p.path).stem + ".png"

    run_batch(small_batches, paths[:3], out, workers=0, on_prediction=explain, explained=True)
    with pytest.raises(BatchError, match="written with --explain"):
        run_batch(small_batches, paths, out, workers=0)
    assert run_batch(small_batches, paths, out, workers=0, on_prediction=explain, explained=True).skipped == 3


def test_top_k_over_the_models_breeds_writes_its_breeds_only(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    """Found by QA: `-k 200` wrote 80 breed columns that were always empty, and a huge -k ran out of memory."""
    (tmp_path / "cat.jpg").write_bytes(chelsea_jpeg)
    out = tmp_path / "r.csv"
    for _ in range(2):  # and it resumes
        res = runner.invoke(app, ["predict", str(tmp_path / "cat.jpg"), "-k", "1000000000", "--out", str(out)])
        assert res.exit_code == 0, res.output
    with open(out, newline="") as f:
        header, row = list(csv.reader(f))
    assert header[-3:] == ["breed_120", "wnid_120", "probability_120"] and all(row[-3:])
