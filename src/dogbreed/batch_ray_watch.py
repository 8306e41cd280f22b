"""Planning and watching a Ray batch run: how many actors fit, progress lines, and a stall detector.

Why this exists: the first Ray engine took one actor per CPU with ``num_cpus=1`` each and split the paths with a
``repartition`` task. The actors held every CPU, the task waited for one, and the run never ended (on any machine
size). Now the paths are split on the driver (no task needed before the actors), the actor count is checked
against the cluster before anything starts, and the driver takes the rows itself (writing them through the local
engine's sink) while it watches them arrive: progress lines on stderr, and a run where no rows arrive for
``stall_s`` seconds stops with one sentence saying what Ray had free.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from .batch import BatchError

# No rows for this long: stop. The first rows also wait for the actors to start and load the model, and rows come a
# block (at most 256 photos) at a time; once rows flow, the limit grows to 3x the longest gap seen between them.
STALL_S = 600.0
PROGRESS_EVERY_S = 10.0
POLL_S = 1.0


class RayScheduleError(BatchError):
    """The run cannot be scheduled on this Ray cluster, or stopped making progress."""


def plan_actors(actors: int | None, cpus_per_actor: float | None, gpu: bool) -> tuple[int, float]:
    """(actors, CPUs per actor) that fit the cluster; a request that cannot fit is refused before anything starts.

    Default: one actor per GPU with ``gpu``, else as many actors of ``cpus_per_actor`` CPUs (default 1) as the
    cluster's CPUs hold. That takes every CPU, which is safe because no other Ray task needs one while the actors
    run: the paths arrive as ready blocks and the driver itself takes the rows.
    """
    res = ray.cluster_resources()
    n_cpu, n_gpu = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    cpus = 1.0 if cpus_per_actor is None else float(cpus_per_actor)
    if cpus <= 0:
        raise RayScheduleError("--ray-cpus-per-actor must be more than 0")
    if gpu and n_gpu < 1:
        raise RayScheduleError(f"--device cuda on Ray needs a GPU, and this Ray cluster has none ({_fmt(res)})")
    if cpus > n_cpu:
        raise RayScheduleError(f"one actor needs {cpus:g} CPUs and this Ray cluster has {n_cpu:g} "
                               f"({_fmt(res)}); lower --ray-cpus-per-actor")
    fit = math.floor(n_cpu / cpus + 1e-9)  # >= 1, checked above
    fit = min(fit, int(n_gpu)) if gpu else fit
    n = actors or fit
    if n > fit:
        raise RayScheduleError(f"--ray-actors {n} with {cpus:g} CPUs{' and 1 GPU' if gpu else ''} each needs "
                               f"{n * cpus:g} CPUs{f' and {n} GPUs' if gpu else ''}, and this Ray cluster has "
                               f"{_fmt(res)}; at most {fit} actors fit")
    return n, cpus


def split_blocks(paths: list[str], blocks: int) -> list[Any]:
    """``paths`` as ``blocks`` Arrow tables of nearly equal length, in order (Ray Data's input blocks)."""
    import pyarrow as pa

    blocks = max(1, min(blocks, len(paths)))
    step = math.ceil(len(paths) / blocks)
    return [pa.table({"path": paths[i:i + step]}) for i in range(0, len(paths), step)]


def _fmt(res: dict[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU") if k in res] or ["CPU"]
    return ", ".join(f"{res.get(k, 0):g} {k}" for k in keys)


def watch_write(ds: Any, write: Callable[[list[dict[str, Any]]], int], total: int, *, batch_size: int = 64,
                progress: bool = True, stall_s: float = STALL_S, say: Callable[[str], None] | None = None) -> None:
    """Stream ``ds``'s rows in order to ``write`` (which returns how many photos they held) in a thread, while this
    one prints progress and watches for a stall.

    Raises `RayScheduleError` when no row arrives for ``stall_s`` seconds (what Ray had free is in the message),
    and re-raises whatever the stream or the write raised.
    """
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    if progress:  # these lines instead of Ray Data's own, which log every operator's state every few seconds
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    done = [0]
    failed: list[BaseException] = []

    def pump() -> None:
        try:
            # The driver consumes the map's output itself: no write task waits for a CPU the actors hold.
            for table in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
                done[0] += write(table.to_pylist())
        except BaseException as e:  # noqa: BLE001 - handed to the watching thread
            failed.append(e)

    thread = threading.Thread(target=pump, name="dogbreed-ray-rows", daemon=True)
    t0 = last_change = last_say = time.monotonic()
    rows, longest_gap = 0, 0.0
    thread.start()
    while thread.is_alive():
        thread.join(POLL_S)
        now, n = time.monotonic(), done[0]
        if n != rows:
            longest_gap = max(longest_gap, now - last_change) if rows else 0.0  # the first wait includes start-up
            rows, last_change = n, now
        if progress and now - last_say >= PROGRESS_EVERY_S:
            last_say = now
            rate = rows / (now - t0)
            eta = f", ETA {(total - rows) / rate:.0f} s" if rate > 0 else ""
            say(f"ray: {rows}/{total} rows written ({rows / max(1, total):.0%}), {rate:.1f} images/s, "
                f"{now - t0:.0f} s{eta}")
        if thread.is_alive() and now - last_change > max(stall_s, 3 * longest_gap):
            free = ray.available_resources()
            raise RayScheduleError(f"the Ray run made no progress for {now - last_change:.0f} s ({rows}/{total} rows "
                                   f"written; free on the cluster: {_fmt(free)} of {_fmt(ray.cluster_resources())}"
                                   "); try fewer --ray-actors or check `ray status`")
    if failed:
        raise failed[0]
    if progress:
        dt = time.monotonic() - t0
        say(f"ray: {total} rows in {dt:.1f} s ({total / max(dt, 1e-9):.1f} images/s)")
