"""Executors: move prepared batches from decoding to the network, in input order.

On CPU a background thread (`prefetched`): Pillow and numpy release the GIL, so the thread decodes on one core while
ONNX Runtime runs on the others, with no process to start and no batch to copy between processes (measured on 2
cores, 940 photos: 140 images/s against 125 with one DataLoader worker process and 131 decoding in the loop). On
CUDA DataLoader worker processes (`worker_batches`), where many cores must decode to keep a GPU busy. Ray actors
are the third executor (`dogbreed.batch_ray`), over the same `decode.prepare_batch`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ..transforms import Preprocess
from .decode import Defer, Prepared, Source, prepared_batches

T = TypeVar("T")
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

    def produce() -> None:
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
        stop.set()
        thread.join(timeout=10)


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
