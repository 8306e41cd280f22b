"""Streaming, resumable batch prediction: photos in (files, folders, globs, CSV/Parquet manifests), rows out.

Memory stays bounded whatever the input size: paths are read lazily (`inference.sources`), decoded a few batches
ahead of the network (`inference.executors`: a background thread on CPU, DataLoader worker processes with
``workers`` > 0), and each answer is written as soon as it exists (`inference.sinks`). Rows come out in input
order, one per input, so an interrupted run resumes by checking that the output's rows are the first N inputs and
skipping those.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BatchError
from .fileio import writing
from .inference.decode import chunks
from .inference.executors import prefetched
from .inference.scoring import Prediction
from .inference.sinks import RowWriter, columns, flat_row, flat_rows, out_format, parquet_schema, run_settings
from .inference.sources import Sources, count_sources, iter_sources

if TYPE_CHECKING:
    from .predict import Predictor

__all__ = ["BatchError", "BatchSummary", "columns", "count_sources", "flat_row", "flat_rows", "iter_sources",
           "out_format",
           "parquet_schema", "prefetched", "run_batch", "stream_predictions"]

RESUME_HINT = "the rows written before are kept, and the same command resumes after them once the file can be written"


def as_paths(inputs: Sequence[str | os.PathLike]) -> tuple[str, ...]:
    """The inputs of a batch run as paths. Rows are keyed, and resumed, by their photo's path, so a photo in memory
    has no place here: bytes and arrays had become error rows ("file name too long") whose path cell held the
    whole bytes, and a CSV that Python's csv module could not read back."""
    out = []
    for i in inputs:
        if not isinstance(i, (str, os.PathLike)):
            raise TypeError(f"a batch run reads paths (files, folders, globs or a manifest), not {type(i).__name__}: "
                            "its rows are keyed by each photo's path; give photos in memory to dogbreed.predict")
        out.append(os.fspath(i))
    return tuple(out)


def stream_predictions(predictor: Predictor, inputs: Sequence[str], *, workers: int | None = None, skip: int = 0,
                       path_column: str = "path") -> Iterator[Prediction]:
    """Predictions for every input after the first ``skip``, in order: decoded in a background thread, or in
    ``workers`` DataLoader processes (the default on CUDA, where one thread cannot keep up with the GPU)."""
    from .accel import default_workers

    workers = default_workers(predictor.device) if workers is None else workers
    return predictor.iter_predict(Sources(as_paths(inputs), path_column, skip), workers=workers)


@dataclass
class BatchSummary:
    out: str
    total: int  # inputs
    skipped: int  # rows already in the output from an earlier run
    written: int  # rows written by this run
    errors: int  # of those, error rows
    # Error rows among the ``skipped`` ones, counted only where this run predicted no photo (whether the output as a
    # whole holds any prediction is then theirs to say)
    earlier_errors: int = 0

    @property
    def predicted_none(self) -> bool:
        """Whether the output holds not one prediction, only error rows (the command then exits non-zero)."""
        return self.written == self.errors and self.skipped == self.earlier_errors and self.total > 0


def run_batch(predictor: Predictor, inputs: Sequence[str], out: str | Path, *, workers: int | None = None,
              path_column: str = "path", overwrite: bool = False, progress: bool = False,
              on_prediction: Callable[[Prediction], None] | None = None, per_dog: bool = False,
              explained: bool = False) -> BatchSummary:
    """Predict every input into ``out`` (.csv, .jsonl or .parquet), resuming after the rows already there.

    ``on_prediction`` sees each prediction before it is written (the CLI's --explain adds its overlay there).
    CSV and Parquet rows carry the dog count and the main dog's box when the detection stage runs; ``per_dog``
    writes one row per dog instead (JSONL always holds every dog). ``explained``: ``on_prediction`` sets each
    answer's ``explanation`` (a JSONL run resumed with or without it must match its first run)."""
    inputs = as_paths(inputs)
    total = count_sources(inputs, path_column)
    with writing(out, RESUME_HINT, missing=True):
        writer = RowWriter(out, predictor.top_k, overwrite=overwrite, dogs=predictor.finds_dogs, per_dog=per_dog,
                           n_breeds=len(predictor.classes), settings=run_settings(predictor.options),
                           answer_keys=[k for k, on in (("look_alikes", predictor.gallery is not None),
                                                        ("explanation", explained)) if on])
    bar = stream = None
    try:
        writer.check_resumable(iter_sources(inputs, path_column), total)
        stream = stream_predictions(predictor, inputs, workers=workers, skip=writer.done, path_column=path_column)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=writer.done, unit="img", smoothing=0.1, dynamic_ncols=True)
        written = errors = 0
        for chunk in chunks(stream, predictor.batch_size):
            for p in chunk if on_prediction is not None else ():
                on_prediction(p)
            with writing(out, RESUME_HINT):  # a full disk, a read-only remount: one sentence, rows kept
                writer.write(chunk)
            written += len(chunk)
            errors += sum(p.error is not None for p in chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        try:
            if stream is not None:  # the decode thread stops here, also when a write failed
                stream.close()  # a Ctrl-C held while the threads finish is raised here: the rows still close below
        finally:
            if bar is not None:  # before any error's sentence, so that it starts on a line of its own
                bar.close()
            with writing(out, RESUME_HINT):
                writer.close()
    earlier = writer.done_errors() if written == errors and writer.done else 0
    return BatchSummary(str(out), total, writer.done, written, errors, earlier)
