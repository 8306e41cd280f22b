"""Decoding in DataLoader worker processes, for `batch.stream_predictions` with ``workers`` > 0: the CUDA default,
where many cores must decode to keep a GPU busy (the issue's H100 probe: 707 images/s with none, 7,455 with 14).

Apart from `batch.py` because a DataLoader dataset must subclass torch's, and CPU prediction does not load torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .accel import loader_kwargs
from .batch import Prepared, prepared_batches
from .transforms import Preprocess


class PhotoBatches(IterableDataset):
    """Batches of prepared photos. Worker w of W takes batches w, w+W, ...; DataLoader collects from workers in
    that same round-robin order, so batches come out in input order with any number of workers."""

    def __init__(self, inputs: Sequence[str], preprocess: Sequence[Preprocess], draft_size: int, batch_size: int,
                 skip: int = 0, path_column: str = "path"):
        self.args = (list(inputs), list(preprocess), draft_size, batch_size, skip, path_column)

    def __iter__(self) -> Iterator[Prepared]:
        info = get_worker_info()
        part = (info.id, info.num_workers) if info is not None else (0, 1)
        for b in prepared_batches(*self.args, part=part):
            # As tensors, batches cross from the worker in shared memory instead of through a pipe.
            yield Prepared(b.paths, b.errors, [torch.from_numpy(t) for t in b.tensors])


def worker_batches(inputs: Sequence[str], preprocess: Sequence[Preprocess], draft_size: int, batch_size: int,
                   skip: int = 0, path_column: str = "path", *, device: str = "cpu",
                   workers: int = 1) -> Iterator[Prepared]:
    """`batch.prepared_batches`, decoded in ``workers`` processes (pinned memory on CUDA), in input order."""
    ds = PhotoBatches(inputs, preprocess, draft_size, batch_size, skip, path_column)
    yield from DataLoader(ds, batch_size=None, **loader_kwargs(device, workers))
