"""OpenVINO in lanes against OpenVINO with the decode thread: the `Predictor` over a folder, in-process.

    python bench/openvino_lanes.py [--folder ../shared/data/real/not-dogs/other] [--rounds 3]
                                   [--out bench/results/openvino_lanes.json]

On a CPU with native bf16 (AVX512-BF16 or AMX) this is the default `--precision auto` path, bf16 on OpenVINO,
``lanes=1`` (one batch at a time, a decode thread ahead) against ``lanes=2`` (`executors.lanes`, each lane its own
infer requests). On any other CPU OpenVINO is told bf16 is there (``native_bf16`` forced), and its CPU plugin, which
cannot compute bf16 there, compiles the same graphs in f32: the same code path and threading, slower arithmetic,
so the Python and Pillow share of a photo is smaller than on a bf16 machine. The JSON says which was measured.
Each round runs the two settings one after the other, after warming both on 40 photos; answers (verdict and top
breed) are compared too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dogbreed import onnxrun
from dogbreed.fileio import atomic_write_text
from dogbreed.inference import runners
from dogbreed.inference.sources import expand_inputs
from dogbreed.predict import Predictor
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "real" / "not-dogs" / "other")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "openvino_lanes.json")
    args = ap.parse_args(argv)
    native = onnxrun.native_bf16()
    if not native:  # OpenVINO's plugin then compiles f32: see the docstring
        for module in (onnxrun, runners):
            module.native_bf16 = lambda: True  # type: ignore[attr-defined]
    paths = expand_inputs([args.folder])
    settings = {"decode thread (lanes=1)": Predictor(precision="bf16", lanes=1),
                "lanes (lanes=2)": Predictor(precision="bf16", lanes=2)}
    for p in settings.values():
        list(p.iter_predict(paths[:40]))
    seconds: dict[str, list[float]] = {k: [] for k in settings}
    answers: dict[str, list[tuple[str, str | None]]] = {}
    for r in range(args.rounds):
        for name, p in settings.items():
            t = time.perf_counter()
            out = list(p.iter_predict(paths))
            seconds[name].append(round(time.perf_counter() - t, 2))
            answers.setdefault(name, [(x.verdict, x.breeds[0].name if x.breeds else None) for x in out])
            print(f"round {r}: {name}: {len(paths)} photos in {seconds[name][-1]} s "
                  f"({len(paths) / seconds[name][-1]:.1f} images/s)", flush=True)
    first, second = answers.values()
    same = sum(a == b for a, b in zip(first, second, strict=True))
    print(f"same verdict and top breed: {same} of {len(paths)}")
    record = {"cpu": cpu_name(), "computed_in": "bf16" if native else "f32 (no native bf16: OpenVINO's fallback)",
              "folder": str(args.folder), "photos": len(paths), "seconds": seconds,
              "images_per_s": {k: [round(len(paths) / s, 1) for s in v] for k, v in seconds.items()},
              "same_verdict_and_top_breed": same}
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
