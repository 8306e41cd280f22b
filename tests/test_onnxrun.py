"""ONNX Runtime sessions (dogbreed.onnxrun): the packaged models' cached exports, and prediction without torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import noise_image, write_jpeg

from dogbreed.dogness import default_detector
from dogbreed.onnxrun import BF16_TOLERANCE, native_bf16
from dogbreed.predict import Predictor, expand_inputs


@pytest.fixture()
def photos(tmp_path: Path, chelsea_jpeg: bytes) -> Path:
    d = tmp_path / "photos"
    for i in range(3):
        write_jpeg(d / f"{i}.jpg", noise_image(120 + 8 * i, 90, seed=i))
    (d / "cat.jpg").write_bytes(chelsea_jpeg)
    (d / "broken.jpg").write_bytes(chelsea_jpeg[:300])
    return d


def test_default_model_starts_from_its_cached_export(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dogbreed import onnxrun, resolve

    files = expand_inputs([photos])
    with monkeypatch.context() as m:  # the slow path: build the PyTorch model, export (cached), record it
        m.setattr(resolve, "cached_default_model", lambda *a, **k: None)
        built = Predictor()
    fast = Predictor()
    assert isinstance(fast.members[0].model, onnxrun.CachedDefaultModel)
    assert not isinstance(built.members[0].model, onnxrun.CachedDefaultModel)
    assert [p.to_dict() for p in fast.predict(files)] == [p.to_dict() for p in built.predict(files)]
    assert fast.classes == built.classes and fast.decision == built.decision
    # Anything the weights follow from changes the key: then the model is built again, never a stale export used.
    monkeypatch.setattr(onnxrun, "EXPORT_VERSION", onnxrun.EXPORT_VERSION + 1000)
    assert onnxrun.cached_default_model("efficientnet_lite0", True) is None


def test_cpu_prediction_never_imports_torch(photos: Path, tmp_path: Path, default_predictor: Predictor) -> None:
    """torch's import and exit cost ~1.5 s per process on the 2-core machine: `dogbreed predict` on ONNX Runtime
    (the CPU default) must not pay it, dog cascade included, once the exports are cached."""
    det = default_detector()
    assert det is not None and det.cascade is not None
    det.cascade = dataclasses.replace(det.cascade, band=(0.0, 1.0))  # every photo takes the cascade's second stage
    det_path = det.save(tmp_path / "everything-in-band")
    want = [p.to_dict() for p in Predictor(dog_detector=str(det_path)).predict(expand_inputs([photos]))]
    for bb in det.cascade.extra_backbones():  # its member's export is recorded now, as by a first run
        default_predictor.loaded.cascade.member(bb)
    code = ("import sys\n"
            "from dogbreed.cli import main\n"
            f"sys.argv = ['dogbreed', 'predict', {str(photos)!r}, '--format', 'json', '--dog-detector', "
            f"{str(det_path)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert len(rows) == 5 and sum("error" in r for r in rows) == 1
    assert rows == want


@pytest.mark.skipif(not native_bf16(), reason="no OpenVINO or no native bf16 on this CPU")
def test_cpu_bf16_default_stays_within_tolerance_of_fp32(real_data: Path) -> None:
    """`precision="auto"` on a CPU with native bf16 runs OpenVINO bf16: against fp32 ONNX Runtime on real dogs, cats
    and everyday things, dog-or-not decisions, verdicts and top breeds agree and dog probabilities stay close
    (`BF16_TOLERANCE`)."""
    dogs = (expand_inputs([real_data / "imagenet-val-dogs"])[::7][:40]
            + expand_inputs([real_data / "web-dogs"])[::12][:40])
    others = expand_inputs([real_data / "not-dogs" / "cat"])[::25][:20] + \
        expand_inputs([real_data / "not-dogs" / "other"])[::47][:20]
    auto, fp32 = Predictor(), Predictor(precision="fp32")
    assert auto.members[0].model.precision == "bf16" and fp32.members[0].model.precision == "fp32"
    a, b = auto.predict(dogs + others), fp32.predict(dogs + others)
    dog_or_not = sum((x.verdict == "no_dog") == (y.verdict == "no_dog") for x, y in zip(a, b, strict=True)) / len(a)
    verdicts = sum(x.verdict == y.verdict for x, y in zip(a, b, strict=True)) / len(a)
    top1 = sum(x.breeds[0].name == y.breeds[0].name for x, y in zip(a[:len(dogs)], b, strict=False)) / len(dogs)
    worst = max(abs(x.dog_probability - y.dog_probability) for x, y in zip(a, b, strict=True))
    assert dog_or_not >= BF16_TOLERANCE["dog_or_not_agreement"], dog_or_not
    assert verdicts >= BF16_TOLERANCE["verdict_agreement"], verdicts
    assert top1 >= BF16_TOLERANCE["top1_agreement_dogs"], top1
    assert worst <= BF16_TOLERANCE["max_abs_dog_probability"], worst
    assert any(x.breeds[0].probability != y.breeds[0].probability for x, y in zip(a, b, strict=True))  # bf16 ran


def test_bf16_without_native_support_is_fp32_for_auto_and_a_clear_error_when_asked(
        monkeypatch: pytest.MonkeyPatch, photos: Path) -> None:
    from typer.testing import CliRunner

    from dogbreed.cli import app
    from dogbreed.inference import runners

    monkeypatch.setattr(runners, "native_bf16", lambda: False)
    assert Predictor().members[0].model.precision == "fp32"
    with pytest.raises(ValueError, match="needs a CPU that computes bf16 natively"):
        Predictor(precision="bf16")
    res = CliRunner().invoke(app, ["predict", str(photos), "--precision", "bf16"])
    assert res.exit_code == 2 and "natively" in res.output and "Traceback" not in res.output


def test_cached_export_key_follows_a_preprocessing_default(tmp_path: Path) -> None:
    """The key of a cached default export is derived from what shapes it: change a default in transforms.py (no
    list of files names it) and the key changes, so a stale export is never reused."""
    import os
    import shutil

    import dogbreed
    from dogbreed import onnxrun

    def key(src: Path) -> str:
        code = "from dogbreed import onnxrun; print(onnxrun.default_recipe_key('efficientnet_lite0', True))"
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)},
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    pkg = Path(dogbreed.__file__).parent
    for name in ("same", "edited"):
        shutil.copytree(pkg, tmp_path / name / "dogbreed", ignore=shutil.ignore_patterns("__pycache__"))
    t = tmp_path / "edited" / "dogbreed" / "transforms.py"
    text = t.read_text()
    assert '    resize: str = "center_crop"' in text
    t.write_text(text.replace('    resize: str = "center_crop"', '    resize: str = "squash"', 1))
    same, edited = key(tmp_path / "same"), key(tmp_path / "edited")
    assert same == onnxrun.default_recipe_key("efficientnet_lite0", True) and same != "None"
    assert edited != same


def test_one_thread_each_runs_a_twin_session_on_the_calling_thread(default_predictor: Predictor) -> None:
    from dogbreed.onnxrun import OnnxModel, one_thread_each, runs_in_lanes

    model = OnnxModel(default_predictor.members[0].runner.model.path)  # fp32, whatever this CPU's default
    assert runs_in_lanes(model)
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    main = model._session_here()
    with one_thread_each():
        twin = model._session_here()
        inside = model.run_numpy(x)
    assert model._session_here() is main and (twin is not main) == (model.threads > 1)
    if model.threads > 1:
        assert main.get_session_options().intra_op_num_threads == model.threads
    assert twin.get_session_options().intra_op_num_threads == 1
    for a, b in zip(inside, model.run_numpy(x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_openvino_sessions_run_batches_at_once_on_requests_of_their_own(default_predictor: Predictor,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Lanes on OpenVINO: calls at once share the compiled model, each on an infer request of its own (a request
    runs one batch at a time), as many requests as calls ran at once, and the answers one thread gets."""
    import threading

    pytest.importorskip("openvino")
    from dogbreed import onnxrun

    monkeypatch.setattr(onnxrun, "native_bf16", lambda: True)  # without it OpenVINO computes f32: same code path
    model = onnxrun.OnnxModel(default_predictor.members[0].runner.model.path, precision="bf16")
    xs = [np.random.default_rng(i).random((2, 3, 224, 224), dtype=np.float32) for i in range(6)]
    want = [model.run_numpy(x)[0] for x in xs]
    real, meet = model._compiled, threading.Barrier(2, timeout=20)

    class Meeting:  # a request whose every run waits until the other thread's is running too
        def __init__(self) -> None:
            self.request = real.create_infer_request()

        def infer(self, inputs: dict, **kw: bool) -> object:
            meet.wait()  # one request shared behind a lock would never meet: BrokenBarrierError
            return self.request.infer(inputs, **kw)

    class Compiled:
        outputs = real.outputs
        create_infer_request = Meeting

    model._compiled = Compiled()
    model._idle = type(model._idle)()
    got: dict[int, np.ndarray] = {}

    def lane(k: int) -> None:
        for i in range(k, len(xs), 2):
            got[i] = model.run_numpy(xs[i])[0]

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not meet.broken and model._idle.qsize() == 2
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[i], w, rtol=1e-5, atol=1e-5)


def test_the_first_openvino_inference_runs_when_the_model_opens_so_lanes_never_deadlock() -> None:
    """OpenVINO's bindings deadlock when two threads make the process's first inference at once (`onnxrun.
    _warm_bindings`): a `dogbreed predict` on bf16 hung at its first batch in 3 of 70 fresh processes of a
    four-thread repro before. So the first inference runs as the first model opens, before any caller can run one,
    and four threads meeting at their first call all finish. A fresh process, since only its first inference can
    hang; OpenVINO made to think the CPU has bf16 where it has not (same bindings, f32 arithmetic)."""
    pytest.importorskip("openvino")
    code = (
        "import os, threading\n"
        "import numpy as np\n"
        "from dogbreed import onnxrun\n"
        "onnxrun.native_bf16 = lambda: True\n"
        "from dogbreed.inference.detect import packaged_graph\n"
        "model = onnxrun.OnnxModel(packaged_graph(), precision='bf16')\n"
        "assert onnxrun._warm_done, 'no inference ran while the model opened'\n"
        "meet = threading.Barrier(4, timeout=60)\n"
        "x = np.zeros((1, 3, 416, 416), np.float32)\n"
        "def first():\n"
        "    meet.wait()\n"
        "    model.run_numpy(x)\n"
        "threads = [threading.Thread(target=first, daemon=True) for _ in range(4)]\n"
        "[t.start() for t in threads]\n"
        "[t.join(60) for t in threads]\n"
        "print('finished', sum(not t.is_alive() for t in threads), flush=True)\n"
        "os._exit(0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["finished", "4"]


def test_a_cpu_runner_runs_many_rows_in_chunks_with_the_same_outputs(default_predictor: Predictor,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of photos and their crops can hold hundreds of rows (a pack of dogs each); on CPU one forward runs
    at most MAX_ROWS_CPU of them, and the outputs are those of the whole batch at once, in order."""
    from dogbreed.inference import runners

    runner = default_predictor.members[0].runner
    shapes: list[int] = []
    real_run = runner._run
    monkeypatch.setattr(runner, "_run", lambda x: (shapes.append(len(x)), real_run(x))[1])
    size = default_predictor.members[0].preprocess.size
    x = np.random.default_rng(0).normal(0, 1, (11, 3, size, size)).astype(np.float32)
    monkeypatch.setattr(runners, "MAX_ROWS_CPU", 100)
    whole = runner(x)
    assert shapes == [11]
    monkeypatch.setattr(runners, "MAX_ROWS_CPU", 4)
    shapes.clear()
    parts = runner(x)
    assert shapes == [4, 4, 3]
    for a, b in zip(whole, parts, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * max(1.0, float(np.abs(a).max())))


def test_openvino_compiles_a_users_onnx_by_its_content_and_the_caches_own_exports_by_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO keys a blob compiled from a path by the path and the file's size, not its content: a user's model
    replaced at the same path by another graph of the same size must not get the first one's compiled blob back.
    Each open here starts as a new process would, without the process's compiled models."""
    import shutil

    from dogbreed import onnxrun
    from dogbreed.inference.detect import sized_graph
    from dogbreed.runtime import OnceEach

    monkeypatch.setattr(onnxrun, "native_bf16", lambda: True)  # without it OpenVINO computes f32: same code path
    a, b = sized_graph((224, 224)), sized_graph((192, 192))
    assert a.stat().st_size == b.stat().st_size  # the same graph with other input dims
    user = tmp_path / "model.onnx"
    shapes = []
    for src in (a, b, a):
        shutil.copyfile(src, user)
        monkeypatch.setattr(onnxrun, "_compiled_models", OnceEach(onnxrun._compile))
        shapes.append(list(onnxrun.OnnxModel(user, precision="bf16")._compiled.inputs[0].get_shape()))
    assert shapes == [[1, 3, 224, 224], [1, 3, 192, 192], [1, 3, 224, 224]]
    # in one process (a notebook exporting over its last export) the file written again is opened again
    first = onnxrun.OnnxModel(user, precision="bf16")
    shutil.copyfile(b, user)
    assert list(onnxrun.OnnxModel(user, precision="bf16")._compiled.inputs[0].get_shape()) == [1, 3, 192, 192]
    # ... and the graph it replaced is let go (re-exporting in a loop would pile them up), while a model that
    # opened it still runs it
    assert [k for k in onnxrun._compiled_models.made if k[0] == str(user)] == [
        (str(user), first.threads, user.stat().st_size, user.stat().st_mtime_ns)]
    assert first.run_numpy(np.zeros((1, 3, 224, 224), np.float32))[0].shape[0] == 1
    core = onnxrun._openvino_core()
    assert onnxrun._source(core, str(a)) == str(a)  # named by what it holds: compiled from its path, no parse
    assert not isinstance(onnxrun._source(core, str(user)), str)


def test_openvino_blobs_go_to_the_cache_dir_of_the_moment_and_an_unusable_one_only_costs_the_compile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's OpenVINO core is made when bf16 is first asked about (the suite's skipif, at collection, before
    its temporary cache is set): its compiled blobs must still land in $DOGBREED_CACHE as it is when they are
    compiled, not in the user's ~/.cache, which every run of the suite used to grow."""
    from dogbreed import onnxrun
    from dogbreed.inference.detect import sized_graph
    from dogbreed.runtime import OnceEach

    pytest.importorskip("openvino")
    monkeypatch.setattr(onnxrun, "native_bf16", lambda: True)  # without it OpenVINO computes f32: same code path
    onnxrun._openvino_core()  # made under the cache dir set before this test
    x = np.zeros((1, 3, 192, 192), np.float32)
    for name in ("here", "there"):
        monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / name))
        monkeypatch.setattr(onnxrun, "_compiled_models", OnceEach(onnxrun._compile))
        assert onnxrun.OnnxModel(sized_graph((192, 192)), precision="bf16").run_numpy(x)[0].shape[0] == 1
        assert len(list((tmp_path / name / "openvino").glob("*.blob"))) == 1
    user = tmp_path / "model.onnx"
    user.write_bytes(sized_graph((192, 192)).read_bytes())
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "a-file"))  # no cache dir can be made under it
    monkeypatch.setattr(onnxrun, "_compiled_models", OnceEach(onnxrun._compile))
    assert onnxrun.OnnxModel(user, precision="bf16").run_numpy(x)[0].shape[0] == 1
