"""`PredictOptions`: every option of a prediction, declared once, with what a command line needs to offer it.

`dogbreed predict`, `dogbreed serve`, `dogbreed.serve.create_app` and `dogbreed.predict(...)` all take this one
object; the CLI builds its prediction flags from these fields' metadata (`cli.predict_options`), so an option added
here reaches every front end.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError


def _opt(default: Any, help: str, *flags: str, every_command: bool = True, cli: bool = True, **typer: Any) -> Any:
    """A field with its CLI declaration: ``flags`` (default: --field-name), ``typer`` extras (min, max...).
    ``every_command`` False: only `predict` offers it (the service takes it per request, or has no use for it)."""
    return field(default=default, metadata={"help": help, "flags": flags, "every_command": every_command,
                                            "cli": cli, "typer": typer})


@dataclass(frozen=True)
class PredictOptions:
    """Every option a user can give a prediction (frozen: a `Predictor` is loaded for one set of them)."""

    model: str = _opt("default", "'default' (heads adapted on Stanford Dogs photos), 'imagenet' (plain ImageNet "
                      "head), a run directory, a model directory, or an .onnx file.")
    quality: str = _opt("fast", "fast (one model) | best (ensemble + flip TTA)")
    runtime: str = _opt("auto", "torch | onnx | auto (ONNX Runtime on CPU when installed: faster)")
    device: str = _opt("cpu", "cpu | cuda | cuda:N | mps | auto")
    # "auto": on CPU with ONNX models, bf16 on OpenVINO where the CPU computes bf16 natively (~1.7x faster, within
    # onnxrun.BF16_TOLERANCE of fp32), else fp32 on ONNX Runtime; on the torch runtime, bf16 autocast on CUDA
    # (within accel.BF16_TOLERANCE), fp32 elsewhere.
    precision: str = _opt("auto", "auto (bf16 where the hardware computes it natively: OpenVINO on a CPU with "
                          "AVX512-BF16/AMX, autocast on CUDA; else fp32) | fp32 | bf16.")
    top_k: int = _opt(5, "How many breeds to list per photo.", "--top-k", "-k", every_command=False, min=1)
    batch_size: int | None = _opt(None, "Photos per forward pass [16 on CPU, 256 on CUDA].", every_command=False,
                                  min=1)
    # Lanes (`executors.lanes`): batches run at once, each from decoding to answers on one thread; only where every
    # session is ONNX Runtime's or OpenVINO's (CPU) and a run has more than one batch.
    lanes: int | None = _opt(None, "Batches predicted at once on CPU, each on one thread (ONNX models, more than "
                             "one batch) [one per physical core; 1: one batch at a time on every core].",
                             every_command=False, min=1)
    # Dog detector: "default" (shipped with the package), a path written by `dogbreed fit-dog-detector`, or
    # "none" for the plain ImageNet dog mass. dog_target_recall picks its threshold (None: the one stored).
    dog_detector: str = _opt("default", "'default', 'none' (plain dog mass) or a detector written by "
                             "fit-dog-detector.")
    dog_target_recall: float | None = _opt(None, "Dog threshold keeping this share of validation dogs.",
                                           "--target-recall", min=0.5, max=0.999)
    dog_threshold: float | None = _opt(None, "Override the model's dog/no-dog threshold (0-1).", min=0.0, max=1.0)
    # The detector's cascade (a stronger member only for photos with an uncertain first dog score), used when the
    # detector has one, the predictor runs its first backbone alone on the plain view, and no other recall target
    # is asked for. False: the first member alone (faster, rejects fewer cats).
    dog_cascade: bool = _opt(True, "fast: check photos with an uncertain dog score again with Lite2 (rejects more "
                             "cats; only those photos pay).", "--dog-cascade/--no-dog-cascade")
    # `fast`'s second look at breeds (`scoring.BreedCascade`): a dog the default Lite0 head is unsure of
    # (calibrated top-1 under its uncertain threshold) is read again by `best`'s ensemble; False: Lite0 alone.
    breed_cascade: bool = _opt(True, "fast: read a dog whose breed Lite0 is unsure of again with best's ensemble "
                               "(Lite0-2, plain and flipped; only those dogs pay).",
                               "--breed-cascade/--no-breed-cascade")
    # Look-alike photos: a gallery file written by `dogbreed gallery build` (or a loaded `gallery.Gallery`); None
    # (the default) loads nothing and changes nothing.
    gallery: Any = _opt(None, "A gallery from `dogbreed gallery build`: list the nearest labelled photos of the "
                        "top breeds with each answer.")
    # The detection stage: find each animal in the photo and answer for every dog (used when the model has a dog
    # detector to judge the crops); False judges the photo as a whole, as one centre crop.
    find_dogs: bool = _opt(True, "Look for each dog in the photo (a detector finds the animals, each crop is "
                           "judged): small and several dogs get their own answer. --whole-photo judges the photo "
                           "as one centre crop (faster).", "--find-dogs/--whole-photo")
    # Flip TTA for a single model (quality "best" always flips); a library knob for measurements.
    tta_flip: bool = _opt(False, "", cli=False)

    def __post_init__(self) -> None:
        # What the command line's ranges cannot catch (NaN passes every comparison) and what a notebook passes.
        t = self.dog_threshold
        if t is not None and not (isinstance(t, numbers.Real) and math.isfinite(t) and 0 <= t <= 1):
            raise ConfigError(f"dog_threshold must be a probability from 0 to 1, not {t!r}")
        if not re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"device must be cpu, cuda, cuda:N, mps or auto, not {self.device!r}")


def cli_fields(every_command: bool = False) -> list[Any]:
    """The fields a command line offers: all of them for `predict`, the shared ones with ``every_command``."""
    return [f for f in fields(PredictOptions) if f.metadata["cli"]
            and (f.metadata["every_command"] or not every_command)]
