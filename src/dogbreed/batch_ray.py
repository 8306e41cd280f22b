"""Batch prediction on Ray Data: a dataset of paths -> ``map_batches`` over an actor pool -> Parquet.

Each actor loads the `Predictor` once and then decodes, preprocesses and predicts whole batches, so the work
spreads over every CPU (or GPU) the cluster offers. Rows have the same columns and values as the local engine's
Parquet output (`batch.flat_row`); a rerun skips the paths already in the output folder.

Ray is an optional extra (``pip install 'dogbreed[ray]'``). Without an address a local Ray instance is started
for the run; with one (``auto``, ``ray://head:10001``) the run joins that cluster, whose nodes must all see the
photo paths (a shared file system) and have dogbreed installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from .batch import BatchError, BatchSummary, columns, flat_row, iter_sources, parquet_schema, prepare_batch
from .batch_ray_watch import STALL_S, plan_actors, watch_write
from .batch_ray_watch import split_blocks as _blocks

RAY_BATCH_SIZE = 64  # photos per map_batches call: big enough to amortise Ray's per-batch overhead


class PredictActor:
    """One per Ray actor: the model is loaded in ``__init__`` and reused for every batch the actor gets."""

    def __init__(self, opts: dict[str, Any], dog_threshold: float | None = None):
        from .predict import Predictor

        self.predictor = Predictor(**opts)
        if dog_threshold is not None:
            self.predictor.decision.dog_threshold = dog_threshold
        self.preprocess = [m.preprocess for m in self.predictor.members]

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        from .predict import Prediction

        paths = [str(p) for p in batch.column("path").to_pylist()]
        prepared = prepare_batch(paths, self.preprocess, self.predictor.draft_size)
        ok = [p for p, e in zip(paths, prepared.errors, strict=True) if e is None]
        preds = iter(self.predictor.predict_tensors(prepared.tensors, ok) if ok else [])
        k = self.predictor.top_k
        rows = [flat_row(next(preds) if e is None else Prediction(p, "error", 0.0, [], error=e), k)
                for p, e in zip(paths, prepared.errors, strict=True)]
        return pa.Table.from_pylist(rows, schema=parquet_schema(k))


def run_ray(inputs: Sequence[str], out: str | Path, opts: dict[str, Any], *, dog_threshold: float | None = None,
            address: str | None = None, path_column: str = "path", overwrite: bool = False,
            actors: int | None = None, batch_size: int = RAY_BATCH_SIZE, cpus_per_actor: float | None = None,
            progress: bool = False, stall_s: float | None = None) -> BatchSummary:
    """Predict every input into the Parquet folder ``out`` on Ray (local, or the cluster at ``address``)."""
    import pyarrow.parquet as pq

    out = Path(out)
    opts = {**opts, "top_k": int(opts.get("top_k") or 5), "batch_size": opts.get("batch_size") or batch_size}
    if overwrite and out.is_dir():
        for f in out.glob("*.parquet"):
            f.unlink()
    done = _done_paths(out, opts["top_k"])
    # The path list lives on the driver (about 100 bytes a path); the photos themselves are read by the actors.
    paths = list(iter_sources(inputs, path_column))
    todo = [p for p in paths if p not in done]
    summary = BatchSummary(str(out), len(paths), len(paths) - len(todo), len(todo), 0)
    if not todo:
        return summary
    started = _init(address)
    try:
        n_actors, cpus = plan_actors(actors, cpus_per_actor, _gpu(opts))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in input order, like the local engine
        # Several blocks, so every actor gets work (one block would go to one actor), but not one per batch; at most
        # 4 batches a block, since rows are written (and progress and the stall detector see them) a block at a time.
        blocks = min(math.ceil(len(todo) / batch_size), max(4 * n_actors, math.ceil(len(todo) / (4 * batch_size))))
        n_actors = min(n_actors, blocks)
        ds = ray.data.from_arrow(_blocks(todo, blocks))  # split here: a repartition task would need a free CPU
        ds = ds.map_batches(PredictActor, fn_constructor_kwargs={"opts": opts, "dog_threshold": dog_threshold},
                            batch_size=batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=cpus,
                            num_gpus=1 if _gpu(opts) else 0)
        watch_write(ds, out, len(todo), progress=progress, stall_s=STALL_S if stall_s is None else stall_s)
    finally:
        if started:
            ray.shutdown()
    errors = sum(e is not None for e in pq.read_table(out, columns=["error"]).column(0).to_pylist())
    summary.errors = errors
    return summary


def _gpu(opts: dict[str, Any]) -> bool:
    return str(opts.get("device", "cpu")).startswith("cuda")


def _init(address: str | None) -> bool:
    """Join ``address`` or start a local Ray; True when this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # Worker processes must import dogbreed; an editable/installed package does, a PYTHONPATH checkout needs
        # the variable passed on.
        env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, runtime_env=env)
    return True


def _done_paths(out: Path, top_k: int) -> set[str]:
    """Paths already in ``out`` (a rerun skips them); an unreadable part, left by a killed run, is removed."""
    import pyarrow.parquet as pq

    if out.exists() and not out.is_dir():
        raise BatchError(f"{out} is a file; Parquet output is a folder of part files")
    done: set[str] = set()
    for f in sorted(out.glob("*.parquet")) if out.is_dir() else []:
        try:
            t = pq.read_table(f, columns=["path"])
            names = pq.ParquetFile(f).schema_arrow.names
        except Exception:  # noqa: BLE001 - a torn file: its rows are redone
            f.unlink()
            continue
        if names != columns(top_k):
            raise BatchError(f"{f} has other columns, e.g. another --top-k; use --overwrite or another --out")
        done.update(str(p) for p in t.column(0).to_pylist())
    return done
