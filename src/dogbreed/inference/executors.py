"""Executors: move prepared batches from decoding to the network, in input order.

On CPU a background thread (`prefetched`): Pillow and numpy release the GIL, so the thread decodes on one core while
ONNX Runtime runs on the others, with no process to start and no batch to copy between processes (measured on 2
cores, 940 photos: 140 images/s against 125 with one DataLoader worker process and 131 decoding in the loop). On
CUDA DataLoader worker processes (`worker_batches`), where many cores must decode to keep a GPU busy. Ray actors
are the third executor (`dogbreed.batch_ray`), over the same `decode.prepare_batch`.

`lanes` runs whole batches, from decoding to answers, on one thread per core (`onnxrun.one_thread_each`: ONNX
Runtime computes each lane on its own core, since the detection stage's small graphs split poorly over cores;
OpenVINO runs each lane's own infer request): the CPU default for many photos on ONNX models.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ..runtime import ctrl_c_held
from ..transforms import Preprocess
from .decode import Defer, Prepared, Source, prepared_batches

T = TypeVar("T")
U = TypeVar("U")
PREFETCH_BATCHES = 3  # decoded batches waiting for the network: enough to ride out one slow (huge) photo


def prefetched(items: Iterator[T], depth: int = PREFETCH_BATCHES) -> Iterator[T]:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer. An exception in the thread
    is raised here, in order; closing the generator stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    finished = threading.Event()

    def produce() -> None:
        with _setting(finished):
            try:
                for it in items:
                    if not put(("item", it)):
                        return
                put(("done", None))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
                put(("error", e))

    thread = threading.Thread(target=produce, name="dogbreed-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        _stop_and_wait(stop.set, [thread], [finished], 10)  # the thread runs the detector's session


def worker_batches(sources: Iterable[Source], preprocess: Sequence[Preprocess], draft_size: int, batch_size: int,
                   names: Iterable[str | None] | None = None, *, device: str = "cpu",
                   workers: int = 1, finder_precision: str | None = None,
                   defer: Defer | None = None) -> Iterator[Prepared]:
    """`decode.prepared_batches` decoded in ``workers`` DataLoader processes (pinned memory on CUDA), in input
    order. Worker w of W takes batches w, w+W, ...; DataLoader collects from workers in that same round-robin
    order, so batches come out in input order with any number of workers.

    ``sources`` must be re-iterable (a list, or an object whose ``__iter__`` starts over, like
    `sources.Sources`): every worker walks it from the start and keeps its own share, so a million-row manifest is
    never held in memory. With ``finder_precision`` each worker runs the detection stage itself (its own session:
    one opened before the fork would be shared unsafely)."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    from ..accel import loader_kwargs

    args = (sources, list(preprocess), draft_size, batch_size, names)

    class PhotoBatches(IterableDataset):
        def __iter__(self) -> Iterator[Prepared]:
            info = get_worker_info()
            part = (info.id, info.num_workers) if info is not None else (0, 1)
            finder = None
            if finder_precision is not None:
                from .detect import default_finder

                finder = default_finder(finder_precision)
            for b in prepared_batches(*args, part=part, finder=finder, defer=defer):
                # As tensors, batches cross from the worker in shared memory instead of through a pipe.
                yield Prepared(b.paths, b.errors, [torch.from_numpy(t) for t in b.tensors], None, b.regions)

    yield from DataLoader(PhotoBatches(), batch_size=None, **loader_kwargs(device, workers))


def batches(sources: Iterable[Source], preprocess: Sequence[Preprocess], draft_size: int, batch_size: int,
            names: Iterable[str | None] | None = None, *, workers: int = 0, device: str = "cpu",
            keep_images: bool = False, finder: Any | None = None, defer: Defer | None = None) -> Iterator[Prepared]:
    """Prepared batches of ``sources`` in order: decoded (and, with a ``finder``, searched for animals) in a
    background thread (``workers`` = 0), or in ``workers`` DataLoader processes (which hand no decoded photos
    back, only arrays)."""
    if workers > 0:
        return worker_batches(sources, preprocess, draft_size, batch_size, names, device=device, workers=workers,
                              finder_precision=finder.precision if finder is not None else None, defer=defer)
    return prefetched(prepared_batches(sources, preprocess, draft_size, batch_size, names, keep_images,
                                       finder=finder, defer=defer))


def _stop_and_wait(stop: Callable[[], None], threads: Sequence[threading.Thread],
                   finished: Sequence[threading.Event], seconds: float) -> None:
    """``stop()`` the threads, then wait up to ``seconds`` for those that run native code to finish, a Ctrl-C
    meanwhile held (`runtime.ctrl_c_held`). A thread still in a session's run when the interpreter exits aborts the
    process ("terminate called without an active exception", exit 134 instead of 130: 3 of 10 runs interrupted by
    `timeout -s INT`, whose second SIGINT, sent to the group, landed in the join). Each thread sets its event as its
    work ends, then is joined: a join interrupted before could leave `is_alive()` saying False."""
    with ctrl_c_held():
        stop()
        deadline = time.monotonic() + seconds
        for f in finished:
            f.wait(timeout=max(0.0, deadline - time.monotonic()))
        for t in threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))


@contextlib.contextmanager
def _setting(event: threading.Event) -> Iterator[None]:
    """Sets ``event`` when the block is left, however it is left."""
    try:
        yield
    finally:
        event.set()


def lanes(items: Iterable[T], work: Callable[[T], U], n: int, ahead: int = PREFETCH_BATCHES) -> Iterator[U]:
    """``work(item)`` for each of ``items``, run on ``n`` threads at once (inside `onnxrun.one_thread_each`: ONNX
    Runtime computes each on its own core), yielded in input order. A lane takes the next item only while fewer than
    ``n + ahead`` are taken and not yet yielded, so one slow (huge) photo holds back memory, not order. The first
    exception, from ``items`` or ``work``, is raised here in its place; closing the generator stops the lanes once
    their current item is done."""
    from ..onnxrun import one_thread_each

    source = iter(items)
    done: dict[int, tuple[bool, Any]] = {}  # index -> (ok, result or exception), waiting to be yielded
    cv = threading.Condition()
    st = {"taken": 0, "out": 0, "end": None, "stop": False}  # end: no item at or after it will come

    def take() -> tuple[int, T] | None:
        with cv:
            while not st["stop"] and st["end"] is None and st["taken"] - st["out"] >= n + ahead:
                cv.wait()
            if st["stop"] or st["end"] is not None:
                return None
            i = st["taken"]
            try:
                item = next(source)
            except StopIteration:
                st["end"] = i
                cv.notify_all()
                return None
            except BaseException as e:  # noqa: BLE001 - raised by the consumer at this item's place
                done[i], st["end"] = (False, e), i + 1
                cv.notify_all()
                return None
            st["taken"] = i + 1
            return i, item

    def lane(finished: threading.Event) -> None:
        with one_thread_each(), _setting(finished):
            while (got := take()) is not None:
                i, item = got
                try:
                    result: tuple[bool, Any] = (True, work(item))
                except BaseException as e:  # noqa: BLE001 - raised by the consumer at this item's place
                    result = (False, e)
                with cv:
                    done[i] = result
                    if not result[0]:  # nothing after a failed item is taken
                        st["end"] = i + 1 if st["end"] is None else min(st["end"], i + 1)
                    cv.notify_all()

    finished = [threading.Event() for _ in range(max(1, n))]
    threads = [threading.Thread(target=lane, args=(f,), name=f"dogbreed-lane-{k}", daemon=True)
               for k, f in enumerate(finished)]
    for t in threads:
        t.start()
    try:
        while True:
            with cv:
                i = st["out"]
                while i not in done and (st["end"] is None or i < st["end"]):
                    cv.wait()
                if i not in done:
                    return
                ok, value = done.pop(i)
                st["out"] = i + 1
                cv.notify_all()
            if not ok:
                raise value
            yield value
    finally:
        def stop() -> None:
            with cv:
                st["stop"] = True
                cv.notify_all()

        _stop_and_wait(stop, threads, finished, 30)  # a lane's current batch runs the sessions' native code
