"""`PredictOptions`: every option of a prediction, declared once, with what a command line needs to offer it.

`dogbreed predict`, `dogbreed serve`, `dogbreed.serve.create_app` and `dogbreed.predict(...)` all take this one
object; the CLI builds its prediction flags from these fields' metadata (`cli.predict_options`), so an option added
here reaches every front end.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ..breeds import listed
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
        # What the command line's types and ranges catch, checked here for a notebook too (NaN passes every
        # comparison, True is an int), each refused in one sentence as its flag is.
        for f in fields(self):
            _check(f, getattr(self, f.name))
        if not re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"device must be cpu, cuda, cuda:N, mps or auto, not {self.device!r}")


@functools.cache
def choices() -> dict[str, tuple[str, ...]]:
    """The values a text option takes (the CLI says the same in its help), checked before anything is loaded; read
    where they are defined, on first use, so that `dogbreed --help` does not import the runtimes' modules."""
    from ..accel import PRECISIONS
    from ..resolve import QUALITIES
    from .runners import RUNTIMES

    return {"quality": QUALITIES, "runtime": RUNTIMES, "precision": PRECISIONS}


_NUMBERS = {"top_k": int, "batch_size": int, "lanes": int, "dog_target_recall": float, "dog_threshold": float}
_SWITCHES = ("dog_cascade", "breed_cascade", "find_dogs", "tta_flip")


def _check(f: Any, value: Any) -> None:
    """One field's value, by its declaration: a choice, a switch, or a number within its flag's range."""
    name = f.name
    allowed = choices().get(name)
    if allowed is not None and value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{name} must be {listed([repr(c) for c in allowed])}, not {value!r}{hint}")
    if name in _SWITCHES and not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, not {value!r}")
    if name not in _NUMBERS or (value is None and f.default is None):
        return
    kind = _NUMBERS[name]
    lo, hi = f.metadata["typer"].get("min"), f.metadata["typer"].get("max")
    ok = (isinstance(value, numbers.Integral if kind is int else numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi))
    if not ok:
        what = "a whole number" if kind is int else "a number"
        span = (f" from {lo} to {hi}" if hi is not None else f" of at least {lo}") if lo is not None else ""
        raise ConfigError(f"{name} must be {what}{span}, not {value!r}")


def _checked_init(init: Any) -> Any:
    """`PredictOptions`'s own __init__, refusing an unknown option name with the closest known one (a notebook's
    ``Predictor(qualty="best")``, `dataclasses.replace` included), as `train --set` does."""
    @functools.wraps(init)
    def __init__(self: PredictOptions, *args: Any, **kwargs: Any) -> None:
        known = [f.name for f in fields(PredictOptions)]
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                raise ConfigError(f"unknown prediction option {key!r}"
                                  + (f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"))
        init(self, *args, **kwargs)
    return __init__


PredictOptions.__init__ = _checked_init(PredictOptions.__init__)  # type: ignore[method-assign]


def cli_fields(every_command: bool = False) -> list[Any]:
    """The fields a command line offers: all of them for `predict`, the shared ones with ``every_command``."""
    return [f for f in fields(PredictOptions) if f.metadata["cli"]
            and (f.metadata["every_command"] or not every_command)]
