"""bf16 (the CPU default where the hardware computes it natively: OpenVINO) against fp32 (ONNX Runtime), on real
photos through `Predictor`: do the answers change, and does accuracy?

    python bench/precision.py            # ~2 min on 2 cores; writes bench/results/precision.json

Per set: photos, dog-or-not decisions ("no dog" or not), verdicts and top-1 breeds that agree, the largest change
of a dog probability, the share of photos called "no dog", and for the breed-labelled sets (folders named
<wnid>-<breed>) top-1 accuracy under each precision.
web-dogs and imagenet-val-dogs were used to fit the shipped heads, so their accuracies are in-sample: they are here
to compare the two precisions, not to state accuracy (README's accuracy section does that, out of fold).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
SETS = ("web-dogs", "imagenet-val-dogs", "dogs-any", "not-dogs/cat", "not-dogs/other")
LABELLED = ("web-dogs", "imagenet-val-dogs")  # <wnid>-<breed> folders


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from dogbreed.fileio import atomic_write_text
    from dogbreed.onnxrun import native_bf16
    from dogbreed.predict import Predictor, expand_inputs

    if not native_bf16():
        sys.exit("this CPU (or this install) has no native bf16: the default is fp32 here, nothing to compare")
    preds = {"bf16": Predictor(), "fp32": Predictor(precision="fp32")}
    assert preds["bf16"].members[0].model.precision == "bf16"
    out = {}
    for name in SETS:
        files = expand_inputs([(REAL / name).resolve()])
        got, secs = {}, {}
        for k, p in preds.items():
            t0 = time.perf_counter()
            got[k] = p.predict(files)
            secs[k] = round(time.perf_counter() - t0, 2)
        a, b = got["bf16"], got["fp32"]
        row = {"photos": len(files), "seconds": secs,
               "dog_or_not_agree": sum((x.verdict == "no_dog") == (y.verdict == "no_dog")
                                       for x, y in zip(a, b, strict=True)),
               "verdicts_agree": sum(x.verdict == y.verdict for x, y in zip(a, b, strict=True)),
               "top1_agree": sum(x.breeds[0].name == y.breeds[0].name for x, y in zip(a, b, strict=True)),
               "max_abs_dog_probability_change": round(max(abs(x.dog_probability - y.dog_probability)
                                                           for x, y in zip(a, b, strict=True)), 4),
               "no_dog_share": {k: round(sum(p.verdict == "no_dog" for p in v) / len(v), 4) for k, v in got.items()}}
        if name in LABELLED:
            wnid = [Path(f).parent.name.split("-", 1)[0] for f in files]
            row["top1_accuracy"] = {k: round(sum(p.breeds[0].wnid == w for p, w in zip(v, wnid, strict=True))
                                             / len(v), 4) for k, v in got.items()}
        out[name] = row
        print(name, json.dumps(row), flush=True)
    dest = ROOT / "bench" / "results" / "precision.json"
    atomic_write_text(dest, json.dumps(out, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
