"""Batch prediction on Ray Data: a dataset of paths -> ``map_batches`` over an actor pool -> rows -> Parquet.

Each actor loads the `Predictor` once and then decodes, preprocesses and predicts whole batches, so the work
spreads over every CPU (or GPU) the cluster offers. The driver receives the rows in input order and writes them
through the same sink as the local engine (`inference.sinks.RowWriter`: numbered Parquet parts, each written
atomically), so the two engines write the same files and share one resume rule: the rows already there must be
the first inputs, and a rerun skips them.

Ray is an optional extra (``pip install 'dogbreed[ray]'``). Without an address a local Ray instance is started
for the run; with one (``auto``, ``ray://head:10001``) the run joins that cluster, whose nodes must all see the
photo paths (a shared file system) and have dogbreed installed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from .batch import RESUME_HINT, BatchSummary
from .batch_ray_watch import STALL_S, plan_actors, split_blocks, watch_write
from .errors import BatchError
from .fileio import writing
from .inference.loading import finds_dogs
from .inference.options import PredictOptions
from .inference.sinks import RowWriter, flat_rows, parquet_schema, run_settings
from .inference.sources import count_sources, iter_sources
from .resolve import model_breeds

RAY_BATCH_SIZE = 64  # photos per map_batches call: big enough to amortise Ray's per-batch overhead


class PredictActor:
    """One per Ray actor: the model is loaded in ``__init__`` and reused for every batch the actor gets."""

    def __init__(self, options: PredictOptions, per_dog: bool = False):
        from .predict import Predictor

        self.predictor, self.per_dog = Predictor(options), per_dog

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        p, paths = self.predictor, [str(x) for x in batch.column("path").to_pylist()]
        rows = [r for x in p.predict(paths) for r in flat_rows(x, p.top_k, p.finds_dogs, self.per_dog)]
        return pa.Table.from_pylist(rows, schema=parquet_schema(p.top_k, p.finds_dogs))


def run_ray(inputs: Sequence[str], out: str | Path, options: PredictOptions | dict[str, Any], *,
            address: str | None = None, path_column: str = "path", overwrite: bool = False, per_dog: bool = False,
            actors: int | None = None, batch_size: int = RAY_BATCH_SIZE, cpus_per_actor: float | None = None,
            progress: bool = False, stall_s: float | None = None) -> BatchSummary:
    """Predict every input into the Parquet folder ``out`` on Ray (local, or the cluster at ``address``);
    ``options`` may also be given as a dict of `PredictOptions` fields."""
    if isinstance(options, dict):
        options = PredictOptions(**options)
    if Path(out).suffix.lower() != ".parquet":
        raise BatchError(f"--out {out}: the Ray engine writes Parquet (a folder named *.parquet)")
    # no more breed columns than the model has breeds, as the local engine writes (a resume may switch engines)
    options = dataclasses.replace(options, batch_size=options.batch_size or batch_size,
                                  top_k=min(options.top_k, model_breeds(options.model) or options.top_k))
    total = count_sources(inputs, path_column)
    # The rows carry dog columns when the actors' predictor runs the detection stage, as the local engine's.
    dogs = finds_dogs(options)
    writer = RowWriter(out, options.top_k, overwrite=overwrite, dogs=dogs, per_dog=per_dog,
                       settings=run_settings(options))
    try:
        writer.check_resumable(iter_sources(inputs, path_column), total)
        # The path list lives on the driver (about 100 bytes a path); the photos themselves are read by the actors.
        todo = list(itertools.islice(iter_sources(inputs, path_column), writer.done, None))
        summary = BatchSummary(str(out), total, writer.done, len(todo), 0)
        if todo:
            plan = {"actors": actors, "cpus_per_actor": cpus_per_actor, "progress": progress,
                    "stall_s": STALL_S if stall_s is None else stall_s}
            summary.errors = _run(todo, writer, options, per_dog, address, batch_size, plan)
    finally:
        writer.close()
    return summary


def _run(todo: list[str], writer: RowWriter, options: PredictOptions, per_dog: bool, address: str | None,
         batch_size: int, plan: dict[str, Any]) -> int:
    """Stream ``todo`` through the actor pool into ``writer``, in order; returns the error rows written."""
    started = _init(address)
    errors = [0]

    def write(rows: list[dict[str, Any]]) -> int:
        with writing(writer.out, RESUME_HINT):
            writer.write_rows(rows)
        firsts = [r for r in rows if r.get("dog") in (None, 1)]  # one per photo, also with a row per dog
        errors[0] += sum(r["error"] is not None for r in firsts)
        return len(firsts)

    try:
        gpu = options.device.startswith("cuda")
        n_actors, cpus = plan_actors(plan["actors"], plan["cpus_per_actor"], gpu)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in input order, like the local engine
        # Several blocks, so every actor gets work (one block would go to one actor), but not one per batch; at most
        # 4 batches a block, since rows are written (and progress and the stall detector see them) a block at a time.
        blocks = min(math.ceil(len(todo) / batch_size), max(4 * n_actors, math.ceil(len(todo) / (4 * batch_size))))
        n_actors = min(n_actors, blocks)
        ds = ray.data.from_arrow(split_blocks(todo, blocks))  # split here: a repartition task would need a free CPU
        ds = ds.map_batches(PredictActor, fn_constructor_kwargs={"options": options, "per_dog": per_dog},
                            batch_size=batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=cpus,
                            num_gpus=1 if gpu else 0)
        watch_write(ds, write, len(todo), batch_size=batch_size, progress=plan["progress"], stall_s=plan["stall_s"])
    finally:
        if started:
            ray.shutdown()
    return errors[0]


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
