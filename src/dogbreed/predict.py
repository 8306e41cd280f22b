"""`Predictor`: photos -> `Prediction`s (dog or not, top-k breeds), a short composition of `inference/`'s stages.

sources -> decode + preprocess (in an executor) -> runners (one per member and view) -> scoring (breeds, dog
probability, the cascade) -> decide -> `Prediction`. On ONNX Runtime (the CPU default) nothing on this path imports
torch, which keeps ~1.5 s of start-up and exit off every `dogbreed predict`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .breeds import Breed
from .dogness import detector_files
from .errors import ImageDecodeError
from .fileio import say_once
from .inference import decode, executors, scoring
from .inference.decode import Prepared, Source, photo_rows, row_source
from .inference.dogs import answer_photos, crops_needed, deferred_crops, dogs_read_again, rows_read
from .inference.loading import LoadedModel, load_model
from .inference.options import PredictOptions
from .inference.regions import Region, shows_whole_photo, view
from .inference.runners import ModelOutputs
from .inference.scoring import BreedScore, Decision, Member, MemberOutput, Prediction, dog_mass
from .inference.sources import IMAGE_EXTENSIONS, expand_inputs
from .onnxrun import runs_in_lanes, sidecar_path
from .resolve import BEST_BACKBONES
from .runtime import physical_cores

__all__ = ["BEST_BACKBONES", "IMAGE_EXTENSIONS", "BreedScore", "Decision", "Member", "MemberOutput", "ModelOutputs",
           "PredictOptions", "Prediction", "Predictor", "dog_mass", "expand_inputs", "get_predictor", "predict"]


PER_CALL = {"top_k", "batch_size", "gallery", "lanes"}  # options a loaded model can change without loading again


class Predictor:
    """Loads a model once for a set of `PredictOptions` and predicts photos in batches.

    ``Predictor(quality="best")`` or ``Predictor(options, top_k=3)``: keyword arguments are option fields. Two
    ways to predict: `predict` / `iter_predict` for sources (paths or bytes, decoded ahead in a background thread
    or worker processes) and `predict_images` for photos already decoded.
    """

    def __init__(self, options: PredictOptions | None = None, **overrides: Any) -> None:
        self.options = dataclasses.replace(options or PredictOptions(), **overrides)
        self.loaded: LoadedModel = load_model(self.options)
        self.gallery = self._load_gallery(self.options.gallery) if self.options.gallery is not None else None
        self.top_k = self.options.top_k

    def with_options(self, **changes: Any) -> Predictor:
        """A predictor sharing this one's loaded models, with other per-call options (`PER_CALL`)."""
        if set(changes) - PER_CALL:
            raise ValueError(f"{sorted(set(changes) - PER_CALL)} need a model loaded again: use Predictor(...)")
        other = object.__new__(Predictor)
        other.options, other.loaded = dataclasses.replace(self.options, **changes), self.loaded
        other.top_k = other.options.top_k
        g = other.options.gallery
        other.gallery = self.gallery if g is self.options.gallery else (self._load_gallery(g) if g else None)
        return other

    # What callers read off a loaded predictor.
    members = property(lambda self: self.loaded.members)
    classes: list[Breed] = property(lambda self: self.loaded.classes)  # type: ignore[assignment]
    decision: Decision = property(lambda self: self.loaded.decision)  # type: ignore[assignment]
    detector = property(lambda self: self.loaded.detector)
    device: str = property(lambda self: self.loaded.device)  # type: ignore[assignment]
    batch_size: int = property(lambda self: self.options.batch_size or self.loaded.batch_size)  # type: ignore
    draft_size: int = property(lambda self: self.loaded.draft_size)  # type: ignore[assignment]
    tta_flip: bool = property(lambda self: self.loaded.tta_flip)  # type: ignore[assignment]
    dog_cascade: bool = property(lambda self: self.loaded.cascade is not None)  # type: ignore[assignment]
    breed_cascade: bool = property(lambda self: self.loaded.breed_cascade is not None)  # type: ignore[assignment]
    model = property(lambda self: self.options.model)
    quality = property(lambda self: self.options.quality)
    finds_dogs: bool = property(lambda self: self.loaded.finder is not None)  # type: ignore[assignment]

    # -- predicting ---------------------------------------------------------------------------------------
    def iter_predict(self, sources: Iterable[Source], names: Iterable[str | None] | None = None, *,
                     workers: int = 0) -> Iterator[Prediction]:
        """Predict files or bytes in batches, yielding one result per source in order; bad ones carry ``error``.

        On CPU with ONNX Runtime or OpenVINO sessions, more than one batch runs in the ``lanes`` option's threads
        at once, each batch from decoding to answers on one thread (`executors.lanes`; None: one per physical core).
        Otherwise decoding runs a few batches ahead: in a background thread (``workers`` = 0), or in ``workers``
        DataLoader processes (then ``sources`` must be re-iterable, e.g. `inference.sources.Sources`)."""
        sources = decode.one_or_many(sources)
        if workers == 0:
            sources = map(decode.as_photo, sources)
        elif isinstance(sources, (list, tuple)):
            # Worker processes each walk the sources again, so they stay a list: converted now (they are in memory
            # already), an array or a file object reaches the workers as a photo, not as a path that cannot be
            # opened. A re-iterable like `inference.sources.Sources` yields paths, which need no converting.
            sources = [decode.as_photo(s) for s in sources]
        n = self.lanes_for(workers, self.options.lanes)
        if n > 1:
            with contextlib.closing(self._in_lanes(sources, names, n)) as answered:
                yield from answered
            return
        pre = [m.preprocess for m in self.members]
        batches = executors.batches(sources, pre, self.draft_size, self.batch_size, names, workers=workers,
                                    device=self.device, keep_images=workers == 0, finder=self.loaded.finder,
                                    defer=unprepared_rows)
        # Worker processes keep no images: a stage that looks at a photo again decodes it from its source, which
        # only this side still has (by names, or as None for a photo in memory, it had read another file or none).
        mine = decode.chunks(iter(sources), self.batch_size) if workers > 0 else None
        try:
            for b in batches:
                yield from self.answers(decode.with_sources(b, next(mine)) if mine is not None else b)
        finally:
            # Stop the decode thread now, not when the generator happens to be collected: it runs the detector's
            # session, and a native thread still running when the interpreter exits (after an error) aborts it.
            batches.close()

    def lanes_for(self, workers: int = 0, lanes: int | None = None) -> int:
        """How many lanes `iter_predict` runs: ``lanes`` (None: one per physical core) where every member is an ONNX
        Runtime or OpenVINO session on CPU and no worker processes decode; else 1."""
        if workers == 0 and self.device == "cpu" and all(runs_in_lanes(m.runner.model) for m in self.members):
            return max(1, physical_cores() if lanes is None else lanes)
        return 1

    def _in_lanes(self, sources: Iterable[Source], names: Iterable[str | None] | None, n: int,
                  ) -> Iterator[Prediction]:
        pre = [m.preprocess for m in self.members]
        pairs = zip(sources, names, strict=True) if names is not None else ((s, None) for s in sources)

        def answer(chunk: list[tuple[Source, str | None]]) -> list[Prediction]:
            b = decode.prepare_batch([s for s, _ in chunk], pre, self.draft_size,
                                     [m for _, m in chunk] if names is not None else None, keep_images=True,
                                     finder=self.loaded.finder, defer=unprepared_rows)
            return list(self.answers(b))

        chunks = decode.chunks(pairs, self.batch_size)
        first = list(itertools.islice(chunks, 2))
        if len(first) < 2:  # one batch (one photo, the service's and latency's case) keeps both cores on it
            for chunk in first:
                yield from answer(chunk)
            return
        # Closed here however this generator stops, so the lanes stop and are waited for at once: a Ctrl-C raised in
        # this frame, not inside `lanes`, would leave that to the garbage collector, perhaps after the interpreter
        # has begun to exit with the lanes still in native code.
        with contextlib.closing(executors.lanes(itertools.chain(first, chunks), answer, n)) as answered:
            for preds in answered:
                yield from preds

    def predict(self, sources: Sequence[Source], names: Sequence[str | None] | None = None) -> list[Prediction]:
        return list(self.iter_predict(sources, names))

    def predict_images(self, images: Sequence[Image.Image], names: Sequence[str | None] | None = None,
                       ) -> list[Prediction]:
        """Already-decoded RGB PIL images -> predictions."""
        images = [decode.as_photo(im) for im in decode.one_or_many(images)]
        if not images:
            return []
        names = list(names) if names is not None else [None] * len(images)
        b = decode.prepare_batch(images, [m.preprocess for m in self.members], self.draft_size, names,
                                 keep_images=True, finder=self.loaded.finder, defer=unprepared_rows)
        return list(self.answers(b))

    def answers(self, b: Prepared) -> Iterator[Prediction]:
        """One prediction per photo of a prepared batch, in order: failed photos carry their error."""
        ok = iter(self.predict_prepared(b) if any(e is None for e in b.errors) else [])
        for p, e in zip(b.paths, b.errors, strict=True):
            yield next(ok) if e is None else Prediction.failed(p, e)

    def predict_prepared(self, b: Prepared) -> list[Prediction]:
        """A decoded and preprocessed batch (`inference.decode.prepare_batch`, from any executor) -> the
        predictions of its readable photos, in order (each with its dogs when the detection stage ran)."""
        paths = b.ok_paths
        same = same_view_rows(b)
        outputs, dog = self._rows(b, same)
        logp = self.breed_log_probabilities(outputs, b)
        if self.loaded.breed_cascade is not None:
            logp = self._breed_second_look(logp, dog, outputs, b, same)
        if b.regions is None:
            preds = scoring.decide(logp, dog, paths, self.classes, self.decision, self.top_k)
        else:
            preds = answer_photos(logp, dog, b.regions, paths, self.classes, self.decision, self.top_k)
        if self.gallery is not None:
            from .gallery import attach_look_alikes

            feats = next(o.out.features for o in outputs
                         if o.member.backbone == self.gallery.backbone and o.view == "plain" and not o.member.dog_only)
            starts = photo_rows(b)
            main = [s + (p.dogs[0].row if p.dogs else 0) for p, s in zip(preds, starts, strict=True)]
            attach_look_alikes(preds, feats[main], self.gallery)
            dogs = [(d, s + d.row) for p, s in zip(preds, starts, strict=True) for d in p.dogs or []]
            if dogs:
                attach_look_alikes([d for d, _ in dogs], feats[[r for _, r in dogs]], self.gallery)
        return preds

    def _rows(self, b: Prepared, same: dict[int, int]) -> tuple[list[MemberOutput], np.ndarray]:
        """The members' outputs and dog probability of every row a batch's answers can read. Two kinds of crop are
        not run where the executor left their inputs as zeros (`unprepared_rows`): one whose square shows the
        whole photo (`regions.shows_whole_photo`) takes the photo's row; one its photo's first dog would hide
        (`dogs.deferred_crops`) is prepared and run only when that first crop turns out not to be such a dog
        (`dogs.crops_needed`), else it keeps a dog probability of 0, which no answer reads, and each answer is the
        one running it would give. ``same``: `same_view_rows`."""
        deferred: list[tuple[int, list[Region], list[int]]] = []  # per photo: first row, regions, deferred crops
        if b.regions is not None:
            for start, found in zip(photo_rows(b), b.regions, strict=True):
                if rows := [i for i in deferred_crops(found) if start + i not in same]:
                    deferred.append((start, found, rows))
        if not deferred and not same:
            outputs = scoring.run_members(self.members, b.tensors, self.tta_flip)
            return outputs, self._dog_rows(outputs, b, None)
        later = {start + i for start, _, rows in deferred for i in rows}
        first = [r for r in range(len(b.tensors[0])) if r not in later and r not in same]
        outputs = scoring.run_members_on(self.members, b.tensors, self.tta_flip, first)
        dog = self._dog_rows(outputs, b, first)
        scoring.copy_rows(outputs, same)
        dog[list(same)] = dog[list(same.values())]
        needed = [start + i for start, found, rows in deferred
                  for i in crops_needed(dog[start:], found, rows, self.decision)]
        if needed:
            decode.prepare_rows(b, needed, [self._image(b, r) for r in needed], [m.preprocess for m in self.members])
            outputs = scoring.run_members_on(self.members, b.tensors, self.tta_flip, needed, into=outputs)
            dog[needed] = self._dog_rows(outputs, b, needed)[needed]
        return outputs, dog

    def _dog_rows(self, outputs: Sequence[MemberOutput], b: Prepared, rows: Sequence[int] | None) -> np.ndarray:
        """Dog probability of ``rows`` (all when None), the cascade's second look included; 0 on every other row."""
        n = len(outputs[0].out.breed_logits)
        dog = scoring.dog_probability(outputs, self.detector, n)
        if rows is not None:
            dog, part = np.zeros_like(dog), dog
            dog[list(rows)] = part[list(rows)]
        if self.loaded.cascade is not None:
            dog = self.loaded.cascade(dog, outputs, lambda r: self._image(b, r))
        return dog

    def breed_log_probabilities(self, outputs: Sequence[MemberOutput], b: Prepared, rows: Sequence[int] | None = None,
                                temperature: float | None = None) -> np.ndarray:
        """Breed log-probabilities from the members' outputs on the batch's rows (or on ``rows`` of it, the
        breed cascade's): the one place a subclass swaps the breed head and keeps the rest of the path
        (bench/stage_out_of_fold.py scores each photo out of fold)."""
        return scoring.combine_breeds(outputs, temperature or self.decision.temperature)

    def _breed_second_look(self, logp: np.ndarray, dog: np.ndarray, outputs: Sequence[MemberOutput],
                           b: Prepared, same: dict[int, int]) -> np.ndarray:
        """Rows unsure of their breed, and dogs answered from a crop cut out of a scene (`dogs.dogs_read_again`),
        read again by `best`'s ensemble (`scoring.BreedCascade`)."""
        bc = self.loaded.breed_cascade
        read = rows_read(logp, dog, b.regions, self.decision) if b.regions is not None else None
        asked = bc.rows(logp, dog, self.decision, read)
        if b.regions is not None:  # each dog of several, and a small lone dog, sure or not
            asked += dogs_read_again(dog, b.regions, self.decision)
        # A crop that shows the whole photo (``same``: `same_view_rows`) is read again as the photo.
        wanted = sorted({same.get(r, r) for r in asked})
        rows, more = bc.outputs(wanted, outputs, lambda r: self._image(b, r))
        if not rows:
            return logp
        logp = logp.copy()
        logp[rows] = self.breed_log_probabilities(more, b, rows, bc.temperature)
        copies = {r: p for r, p in same.items() if p in rows}
        logp[list(copies)] = logp[list(copies.values())]
        return logp

    def scores(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Decoded RGB images -> (breed log-probabilities (N, C), dog probability (N,)), before any decision."""
        xs = [np.stack([decode.to_input(im, m.preprocess) for im in images]) for m in self.members]
        outputs = scoring.run_members(self.members, xs, self.tta_flip)
        return (scoring.combine_breeds(outputs, self.decision.temperature),
                scoring.dog_probability(outputs, self.detector, len(images)))

    def _image(self, b: Prepared, row: int) -> Image.Image | None:
        """Row ``row``'s image (a photo, or a region's crop): kept by the executor, or decoded again (worker
        processes keep none); a photo that fails now keeps its first score."""
        if b.images is not None:
            return b.images[row]
        photo, region = row_source(b, row)
        try:
            src = b.sources[photo] if b.sources is not None else b.ok_paths[photo]
            img = decode.decode_source(src, self.draft_size)
        except (ImageDecodeError, TypeError):
            return None
        return view(img, b.regions[photo], b.regions[photo].index(region)) if region is not None else img

    def _load_gallery(self, gallery: Any) -> Any:
        from .gallery import Gallery  # only with --gallery

        g = gallery if isinstance(gallery, Gallery) else Gallery.load(gallery)
        if g.backbone not in self.loaded.member_backbones:
            raise ValueError(f"gallery was built with {g.backbone}; this model runs {self.loaded.member_backbones}")
        if self.loaded.resolved.backbone_in_weights:
            raise ValueError("gallery features come from the pretrained backbone; this model fine-tuned it")
        return g


def unprepared_rows(regions: Sequence[Region]) -> list[int]:
    """The rows of a photo whose inputs the executor need not prepare (`Predictor._rows`): crops that show the whole
    photo, and crops the first dog would hide."""
    return sorted({i for i, r in enumerate(regions) if shows_whole_photo(r, regions[0])} | set(deferred_crops(regions)))


def same_view_rows(b: Prepared) -> dict[int, int]:
    """Rows of ``b`` whose crop shows the whole photo -> their photo's own row."""
    if b.regions is None:
        return {}
    return {start + i: start for start, found in zip(photo_rows(b), b.regions, strict=True)
            for i, r in enumerate(found) if shows_whole_photo(r, found[0])}


_PREDICTORS: dict[tuple, tuple[tuple, Predictor]] = {}


def get_predictor(options: PredictOptions | None = None, **kwargs: Any) -> Predictor:
    """A cached `Predictor` per set of options (top_k aside), so repeated library calls don't reload weights; loaded
    again when a file the options name has changed since (a notebook's adapt -> predict -> add-breed --overwrite ->
    predict had kept answering with the first model), or names another file from another working folder."""
    opts = dataclasses.replace(options or PredictOptions(), **kwargs)
    key = tuple(sorted((k, repr(v)) for k, v in vars(opts).items() if k != "top_k"))
    stamp = tuple(_files_stamp(v) for v in (opts.model, opts.dog_detector, opts.gallery))
    cached = _PREDICTORS.get(key)
    if cached is None or cached[0] != stamp:
        _PREDICTORS[key] = (stamp, Predictor(opts))
    return _PREDICTORS[key][1].with_options(top_k=opts.top_k)


def _files_stamp(spec: Any) -> tuple:
    """Where a path option leads and what the files it loads are now (size, modification time): a model dir's (or
    its ``model/``'s) model.json and weights, or the file itself with its sidecar."""
    if not isinstance(spec, (str, os.PathLike)) or str(spec) in ("default", "imagenet", "none", ""):
        return (repr(spec),)
    try:
        p = Path(spec).absolute()
        if p.is_dir():
            from .models import MODEL_CONFIG, MODEL_WEIGHTS, model_dir_of  # loading a model dir imports it anyway

            d = model_dir_of(p) or p
            files = [d / MODEL_CONFIG, d / MODEL_WEIGHTS]
        else:  # an export and its sidecar, a detector's two files, a gallery file
            files = list(dict.fromkeys([p, sidecar_path(p), *detector_files(p)]))
        stats = [(str(q), st.st_size, st.st_mtime_ns) for q in files if (st := _stat(q)) is not None]
        return (str(p), *stats)
    except (OSError, ValueError):  # gone, unreadable, a NUL in the name: loading says why
        return (repr(spec),)


def _stat(p: Path) -> os.stat_result | None:
    try:
        return p.stat()
    except OSError:
        return None


def predict(images: Any, top_k: int = 5, model: str = "default", quality: str = "fast",
            **kwargs: Any) -> list[dict[str, Any]]:
    """Library entry point: one photo or a list of them -> list of plain-dict predictions, in input order. A photo
    is a path, folder or glob (expanded to its photos), bytes, a PIL image, a uint8 array or a binary file object
    (`inference.decode.as_photo`).

    ``kwargs`` are the other `PredictOptions` fields (runtime, device, dog_detector, ...).
    """
    sources: list[Any] = []
    for item in decode.one_or_many(images):
        path = isinstance(item, (str, os.PathLike))
        found = expand_inputs([os.fspath(item)]) if path else [decode.as_photo(item)]
        if not found:  # an empty folder, or one with no photo in it: no answer to give, but not without a word
            say_once(f"no photos found in {os.fspath(item)}", key=f"no-photos-{os.fspath(item)}")
        sources += found
    pred = get_predictor(PredictOptions(model=model, quality=quality, top_k=top_k, **kwargs))
    return [p.to_dict() for p in pred.predict(sources)]


class _CallableModule(types.ModuleType):
    """This module is also `dogbreed.predict`, the library's function: importing it (``from dogbreed.predict import
    Predictor``, or the package's own lazy call) binds the module over the package's ``predict``, which must still
    predict when called."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
