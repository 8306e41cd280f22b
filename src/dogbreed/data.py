"""Datasets: Stanford Dogs / Kaggle / folder-per-breed layouts -> `Sample`s; inspect; split manifests; loaders."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import re
import statistics
import warnings
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from .breeds import clean_name, lookup
from .errors import DataError, DataNotFound, ImageDecodeError, too_many_pixels

# Every load checks each photo with `path_problem` (one stat): zero-byte files are common in half-copied datasets,
# and a FIFO or a broken link is reported in the words `predict` uses for the same file.
from .fileio import atomic_write, atomic_write_text, path_problem
from .inference.sources import UnlistedFolder, is_image_name, walk_files
from .paths import cache_dir
from .transforms import (
    JPEG_FORMATS,
    Augment,
    Preprocess,
    augment_image,
    crop_box,
    histogram_ops,
    load_image,
    preprocess_image,
    resize,
    to_tensor,
)

SPLITS = ("train", "val", "test")
LAYOUTS = ("stanford", "kaggle", "folders")
MANIFEST_FIELDS = ("path", "breed", "wnid", "split", "box")
_WNID_DIR = re.compile(r"^(n\d{8})-(.+)$")

Box = tuple[float, float, float, float]


@dataclass
class Sample:
    path: str
    breed: str
    wnid: str | None = None
    box: Box | None = None  # largest annotated box, (xmin, ymin, xmax, ymax) in stored-pixel coordinates
    official_split: str | None = None  # "train" | "test" when the dataset ships its own lists
    # The breed as the dataset wrote it (its folder, or its labels.csv row), where ``breed`` is a known breed's
    # name for it ("Yorkie" -> Yorkshire terrier): a model's own class of that name matches by it first.
    label: str | None = None


@dataclass
class Problem:
    path: str
    reason: str


@dataclass
class DatasetIndex:
    root: str
    layout: str  # "stanford" | "kaggle" | "folders"
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def classes(self) -> list[str]:
        return sorted({s.breed for s in self.samples})


# ---------------------------------------------------------------------------------------------------------------
# Ingest


def _breed_and_wnid(raw: str, wnid: str | None = None) -> tuple[str, str | None]:
    """Clean name + wnid; a known breed takes the table's spelling so every layout names it the same way."""
    known = lookup(wnid) if wnid else None
    raw = re.sub(r"^\d{1,4}\.(?=\D)", "", raw)  # Udacity's numbered folders: "001.Affenpinscher"
    known = known or lookup(raw)
    if known is not None and (wnid is None or known.wnid == wnid):
        return known.name, known.wnid
    return clean_name(raw), wnid


def _is_hidden(p: Path) -> bool:
    return p.name.startswith(".") or p.name == "Thumbs.db"


def _bad_name(p: Path) -> str | None:
    """Why a file or folder name cannot be used, or None: a name that is not UTF-8 (Latin-1 from an old zip) reads
    as text only with stand-in characters, which no manifest, split seed or report can write."""
    try:
        p.name.encode("utf-8")
    except UnicodeEncodeError:
        return f"the name {p.name.encode('utf-8', 'surrogateescape')!r} is not UTF-8: rename it, skipped"
    return None


def _breed_dirs(parent: Path, problems: list[Problem]) -> Iterator[Path]:
    """The breed folders of ``parent``, sorted; what is not one is reported: a file, a hidden folder
    (.ipynb_checkpoints became a breed), a name that is not UTF-8, a link back to a folder holding this one (all the
    other breeds' photos again, under another label)."""
    holder = parent.resolve()
    for d in sorted(parent.iterdir()):
        if not d.is_dir():
            if not _is_hidden(d):
                problems.append(Problem(str(d), "file outside any breed folder"))
            continue
        if _is_hidden(d):
            problems.append(Problem(str(d), "hidden folder, skipped"))
        elif reason := _bad_name(d):
            problems.append(Problem(str(d), reason))
        elif d.is_symlink() and holder.is_relative_to(d.resolve()):
            problems.append(Problem(str(d), f"a link to {d.resolve()}, which holds this folder: skipped (its photos "
                                            "would count again under another breed)"))
        else:
            yield d


def _image_files(folder: Path, problems: list[Problem]) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); anything else is reported, never silently dropped."""
    out = []
    files = list(walk_files(folder))
    problems += [Problem(f, path_problem(f) or "a folder that cannot be listed") for f in files
                 if isinstance(f, UnlistedFolder)]
    for p in sorted(Path(f) for f in files if not isinstance(f, UnlistedFolder)):  # Path order (by part)
        if reason := _bad_name(p):
            problems.append(Problem(str(p), reason))
        elif _is_hidden(p):
            problems.append(Problem(str(p), "hidden file, skipped"))
        elif not is_image_name(p):
            problems.append(Problem(str(p), f"not an image file (extension {p.suffix or 'none'!r})"))
        else:
            out.append(p)
    return out


def _parse_voc_box(path: Path) -> Box | None:
    """The largest <object><bndbox> of a PASCAL VOC file; None if it has none. Raises ValueError on bad XML."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise ValueError(f"unreadable annotation XML ({e})") from e
    best: Box | None = None
    best_area = -1.0
    for bb in tree.getroot().iter("bndbox"):
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            raise ValueError(f"bad bndbox in annotation ({e})") from e
        area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        if area > best_area:
            best, best_area = (x0, y0, x1, y1), area
    return best


def _mat_file_list(path: Path) -> list[str]:
    from scipy.io import loadmat  # lazy: only Stanford's .mat file lists need scipy, and it is slow to import

    m = loadmat(str(path))
    if "file_list" not in m:
        raise ValueError(f"{path.name} has no 'file_list'")
    out = []
    for cell in np.asarray(m["file_list"], dtype=object).ravel():
        v = cell
        while isinstance(v, np.ndarray):  # cell arrays come back as nested 1-element object/str arrays
            v = v.ravel()[0] if v.size else ""
        out.append(str(v).replace("\\", "/"))
    return out


def _stanford_images_dir(root: Path) -> tuple[Path, Path] | None:
    """(Images dir, base dir holding Annotation/ and lists/) if ``root`` looks like Stanford Dogs."""
    if (root / "Images").is_dir():
        return root / "Images", root
    subdirs = [d for d in root.iterdir() if d.is_dir() and not _is_hidden(d)]
    if subdirs and sum(bool(_WNID_DIR.match(d.name)) for d in subdirs) >= max(1, len(subdirs) // 2 + 1):
        return root, (root.parent if root.name == "Images" else root)
    return None


def _kaggle_csv(root: Path) -> Path | None:
    p = root / "labels.csv"
    return p if p.is_file() and (root / "train").is_dir() else None


def detect_layout(path: str | Path) -> str:
    """'stanford', 'kaggle' or 'folders'; raises ValueError when the folder holds none of them."""
    root = Path(path)
    if not root.exists():
        raise DataNotFound(f"no such folder: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    if _stanford_images_dir(root):
        return "stanford"
    if _kaggle_csv(root):
        return "kaggle"
    if any(d.is_dir() and not _is_hidden(d) for d in root.iterdir()):
        return "folders"
    raise DataError(
        f"{root}: no dataset found; expected Images/<wnid>-<Breed>/ (Stanford Dogs), labels.csv + train/ (Kaggle) "
        "or one sub-folder of images per breed"
    )


def _load_stanford(root: Path, index: DatasetIndex) -> None:
    images_dir, base = _stanford_images_dir(root) or (root, root)
    ann_dir = base / "Annotation"
    official: dict[str, str] = {}
    for split in ("train", "test"):
        lst = base / "lists" / f"{split}_list.mat"
        if not lst.is_file():
            continue
        try:
            for rel in _mat_file_list(lst):
                official[rel] = split
        except Exception as e:  # a bad list must not hide the images; report it and go on without it
            index.problems.append(Problem(str(lst), f"unreadable split list ({type(e).__name__}: {e})"))
    seen: set[str] = set()
    for d in _breed_dirs(images_dir, index.problems):
        m = _WNID_DIR.match(d.name)
        breed, wnid = _breed_and_wnid(d.name, m.group(1) if m else None)
        for p in _image_files(d, index.problems):
            rel = p.relative_to(images_dir).as_posix()
            seen.add(rel)
            if reason := path_problem(p):
                index.problems.append(Problem(str(p), reason))
                continue
            box = None
            ann = ann_dir / p.relative_to(images_dir).with_suffix("")
            if not ann.is_file() and ann.with_suffix(".xml").is_file():
                ann = ann.with_suffix(".xml")
            if ann.is_file():
                try:
                    box = _parse_voc_box(ann)
                except ValueError as e:
                    index.problems.append(Problem(str(ann), str(e)))
            index.samples.append(Sample(str(p), breed, wnid, box, official.get(rel), d.name))
    for rel, split in sorted(official.items()):
        if rel not in seen:
            index.problems.append(Problem(str(images_dir / rel), f"listed in lists/{split}_list.mat but missing"))


def _load_kaggle(root: Path, index: DatasetIndex) -> None:
    csv_path = root / "labels.csv"
    train = root / "train"
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "breed"} <= set(reader.fieldnames):
            raise DataError(f"{csv_path}: expected columns id,breed; found {reader.fieldnames}")
        labels: dict[str, str] = {}
        for row in reader:  # a short row, an empty breed or an id given twice is reported, not guessed at
            img_id, raw = (row.get("id") or "").strip(), (row.get("breed") or "").strip()
            where = f"{csv_path} line {reader.line_num}"
            if not img_id and not raw:
                continue
            if not img_id or not raw:
                index.problems.append(Problem(where, f"no {'id' if not img_id else 'breed'} in this row, skipped"))
            elif img_id in labels and labels[img_id] != raw:
                index.problems.append(Problem(where, f"{img_id!r} listed again as {raw!r}, first as "
                                                     f"{labels[img_id]!r}: the first kept"))
            else:
                labels.setdefault(img_id, raw)
    files: dict[str, Path] = {}
    for p in _image_files(train, index.problems):
        if p.stem in files:
            index.problems.append(Problem(str(p), f"a second photo for id {p.stem!r} (beside {files[p.stem].name}):"
                                                  " skipped"))
        else:
            files[p.stem] = p
    names: dict[str, tuple[str, str | None]] = {}
    for img_id, raw in sorted(labels.items()):
        p = files.pop(img_id, None)
        if p is None and is_image_name(img_id):  # ids written with their extension ("000bec18.jpg")
            p = files.pop(Path(img_id).stem, None)
        if p is None:
            name = img_id if is_image_name(img_id) else f"{img_id}.jpg"
            index.problems.append(Problem(str(train / name), "listed in labels.csv but missing"))
            continue
        if reason := path_problem(p):
            index.problems.append(Problem(str(p), reason))
            continue
        if raw not in names:
            names[raw] = _breed_and_wnid(raw)
        breed, wnid = names[raw]
        index.samples.append(Sample(str(p), breed, wnid, label=raw))
    for p in files.values():
        index.problems.append(Problem(str(p), "not listed in labels.csv"))


SPLIT_FOLDERS = {"train", "training", "val", "valid", "validation", "test", "testing"}


def _first_split(root: Path) -> str:
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name.lower() in SPLIT_FOLDERS)
    return next((n for n in names if n.lower().startswith("train")), names[0])


def breed_folders(root: Path) -> list[str]:
    """The sub-folders of ``root`` named as breeds (any spelling `breeds.lookup` knows): two or more say that
    ``root`` is a folder of breeds, not of one breed's photos."""
    try:
        return sorted(d.name for d in root.iterdir() if d.is_dir() and not _is_hidden(d) and lookup(d.name))
    except OSError:
        return []


def _load_folders(root: Path, index: DatasetIndex) -> None:
    dirs = [d for d in root.iterdir() if d.is_dir() and not _is_hidden(d)]
    named = {d.name.lower() for d in dirs}
    if len(named) >= 2 and named <= SPLIT_FOLDERS:  # Udacity's dogImages/: train/valid/test were read as 3 breeds
        raise DataError(f"{root}: its folders ({', '.join(sorted(named))}) are a split, not breeds; give one of them "
                        f"(e.g. {root / _first_split(root)}), whose sub-folders are the breeds")
    # One folder round the breed folders (my_dogs/beagle/, my_dogs/pug/...) was read as one breed, "My dogs".
    if len(dirs) == 1 and len(inner := breed_folders(dirs[0])) >= 2:
        raise DataError(f"{root}: its one folder, {dirs[0].name}/, holds folders of breeds ({', '.join(inner[:4])}"
                        f"{', ...' if len(inner) > 4 else ''}); give {dirs[0]}, whose sub-folders are the breeds")
    for d in _breed_dirs(root, index.problems):
        m = _WNID_DIR.match(d.name)
        breed, wnid = _breed_and_wnid(d.name, m.group(1) if m else None)
        for p in _image_files(d, index.problems):
            if reason := path_problem(p):
                index.problems.append(Problem(str(p), reason))
            else:
                index.samples.append(Sample(str(p), breed, wnid, label=d.name))


def check_image(path: str | Path, full: bool = False) -> str | None:
    """Why ``path`` is not a usable image, or None if it is.

    The quick check reads headers only (Pillow's verify) plus, for JPEGs, looks for the end-of-image marker: a
    truncated JPEG passes verify, and FFD9 cannot occur inside entropy-coded data, so its absence near the end
    means the file was cut short. ``full`` decodes every pixel, which also catches damage inside the data.
    """
    p = Path(path)
    if full:
        try:
            load_image(p)
            return None
        except ImageDecodeError as e:
            return str(e) or "unreadable image"
    if reason := path_problem(p):
        return reason
    try:
        with warnings.catch_warnings():  # over Pillow's bomb limit but under twice it: refused below, in words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                fmt, (w, h) = img.format, img.size
                img.verify()
    except UnidentifiedImageError:
        return "not an image (format not recognised)"
    except Exception as e:
        return f"corrupt image ({type(e).__name__}: {e})"
    # what decoding refuses (a JPEG is decoded at its draft)
    if fmt not in JPEG_FORMATS and Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        return too_many_pixels(w * h, Image.MAX_IMAGE_PIXELS, (w, h))
    if fmt == "JPEG":
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - 4096))
            if b"\xff\xd9" not in f.read():
                return "truncated JPEG (no end-of-image marker)"
    return None


def left_out_photos(index: DatasetIndex) -> dict[str, str]:
    """The photos a dataset's reading left out, and why (empty, broken links, not regular files, listed but
    missing), path -> reason; other files it skipped (notes, hidden files, annotations) are `data inspect`'s to
    list. What `train` records and `evaluate --data` names."""
    return {p.path: p.reason for p in index.problems if is_image_name(p.path) and not p.reason.startswith("hidden")}


def leave_out_unreadable(samples: Sequence[Sample]) -> tuple[list[Sample], dict[str, str]]:
    """The samples whose photo passes `check_image`, and why each other one does not (path -> reason): a model is
    scored, and its best epoch picked, on photos that are there; the loader stands the next photo in for one that
    cannot be read, under the bad one's label."""
    bad = {str(s.path): why for s in samples if (why := check_image(s.path))}
    return [s for s in samples if str(s.path) not in bad], bad


def _image_size(path: str) -> tuple[int, int] | None:
    """(width, height) as displayed, i.e. after EXIF rotation, from the header alone."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
            return w, h
    except Exception:
        return None


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def load_dataset(path: str | Path, *, validate: bool = False, workers: int | None = None) -> DatasetIndex:
    """Index a dataset folder (layout detected); ``validate=True`` decodes every image, moving bad ones to problems.

    Without ``validate`` only cheap checks run (extension, zero bytes), so listing 20k photos takes a second.
    """
    root = Path(path).resolve()
    layout = detect_layout(root)
    index = DatasetIndex(str(root), layout)
    {"stanford": _load_stanford, "kaggle": _load_kaggle, "folders": _load_folders}[layout](root, index)
    if validate and index.samples:
        with ThreadPoolExecutor(workers or _default_workers()) as ex:  # Pillow decodes with the GIL released
            reasons = list(ex.map(lambda s: check_image(s.path, full=True), index.samples))
        good = []
        for s, r in zip(index.samples, reasons, strict=True):
            if r is None:
                good.append(s)
            else:
                index.problems.append(Problem(s.path, r))
        index.samples = good
    return index


@dataclass
class InspectReport:
    index: DatasetIndex
    counts: dict[str, int]  # breed -> good images
    wnids: dict[str, str | None]
    sizes: list[tuple[int, int]]
    boxes: int
    official: dict[str, int]

    def size_stats(self) -> dict[str, dict[str, float]]:
        if not self.sizes:
            return {}
        out = {}
        for k, vals in (("width", [w for w, _ in self.sizes]), ("height", [h for _, h in self.sizes])):
            out[k] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.index.root,
            "layout": self.index.layout,
            "images": sum(self.counts.values()),
            "breeds": [{"breed": b, "wnid": self.wnids[b], "images": n} for b, n in self.counts.items()],
            "sizes": self.size_stats(),
            "with_box": self.boxes,
            "official_split": self.official,
            "problems": [{"path": p.path, "reason": p.reason} for p in self.index.problems],
        }


def inspect_dataset(path: str | Path, *, full: bool = False, workers: int | None = None) -> InspectReport:
    """Load and check every image (headers, or a full decode with ``full``); bad files become problems."""
    index = load_dataset(path)

    def one(s: Sample) -> tuple[str | None, tuple[int, int] | None]:
        reason = check_image(s.path, full=full)
        return reason, (None if reason else _image_size(s.path))

    with ThreadPoolExecutor(workers or _default_workers()) as ex:
        results = list(ex.map(one, index.samples))
    good, sizes = [], []
    for s, (reason, size) in zip(index.samples, results, strict=True):
        if reason is None:
            good.append(s)
            if size:
                sizes.append(size)
        else:
            index.problems.append(Problem(s.path, reason))
    index.samples = good
    counts = Counter(s.breed for s in good)
    wnids = {s.breed: s.wnid for s in good}
    return InspectReport(
        index=index,
        counts={b: counts[b] for b in sorted(counts)},
        wnids=wnids,
        sizes=sizes,
        boxes=sum(s.box is not None for s in good),
        official=dict(sorted(Counter(s.official_split for s in good if s.official_split).items())),
    )


# ---------------------------------------------------------------------------------------------------------------
# Splits and manifests


def _parse_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 or not math.isfinite(r) for r in ratios) or sum(ratios) <= 0:
        raise DataError(f"ratios must be three non-negative numbers (train, val, test); got {tuple(ratios)}")
    total = float(sum(ratios))
    return ratios[0] / total, ratios[1] / total, ratios[2] / total


def _allocate(n: int, ratios: Sequence[float], rng: random.Random) -> list[int]:
    """Largest-remainder counts summing to n, each within 1 of n*ratio; ties go by ``rng`` so no split is
    systematically favoured. The first part (train) is never left empty when n >= 1."""
    exact = [n * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), rng.random()))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= 1 and counts[0] == 0:
        donor = max(range(1, len(counts)), key=lambda i: counts[i])
        counts[donor] -= 1
        counts[0] += 1
    return counts


def _by_breed(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.breed].append(s)
    return {b: sorted(g, key=lambda s: s.path) for b, g in sorted(groups.items())}


def make_split(
    samples: list[Sample],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    use_official: bool = True,
) -> dict[str, list[Sample]]:
    """Stratified train/val/test split, reproducible by ``seed``.

    Each breed is shuffled with its own RNG (seed + breed), so adding a breed leaves the others' splits as they
    were. When samples carry an official split and ``use_official``, test is the official test set and val is
    carved, stratified, from the rest in the proportion val / (train + val).
    """
    r_train, r_val, r_test = _parse_ratios(ratios)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    official = use_official and any(s.official_split == "test" for s in samples)
    if official:
        out["test"] = sorted((s for s in samples if s.official_split == "test"), key=lambda s: (s.breed, s.path))
        pool = [s for s in samples if s.official_split != "test"]
        tv = r_train + r_val
        parts = (r_train / tv, r_val / tv, 0.0) if tv > 0 else (1.0, 0.0, 0.0)
    else:
        pool, parts = list(samples), (r_train, r_val, r_test)
    for breed, group in _by_breed(pool).items():
        rng = random.Random(f"{seed}:{breed}")
        rng.shuffle(group)
        n_train, n_val, n_test = _allocate(len(group), parts, rng)
        out["train"] += group[:n_train]
        out["val"] += group[n_train:n_train + n_val]
        out["test"] += group[n_train + n_val:n_train + n_val + n_test]
    for k in SPLITS:
        out[k].sort(key=lambda s: (s.breed, s.path))
    return out


def split_counts(splits: dict[str, list[Sample]]) -> dict[str, dict[str, int]]:
    """breed -> {split: count}, breeds sorted; for printing and checking balance."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for k, ss in splits.items():
        for s in ss:
            table[s.breed][k] = table[s.breed].get(k, 0) + 1
    return {b: table[b] for b in sorted(table)}


def save_manifest(splits: dict[str, list[Sample]], path: str | Path) -> Path:
    """CSV with columns path,breed,wnid,split,box (box: 'xmin ymin xmax ymax' or empty); written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_FIELDS)
    for split, ss in splits.items():
        for s in ss:
            box = " ".join(f"{v:g}" for v in s.box) if s.box is not None else ""
            w.writerow([s.path, s.breed, s.wnid or "", split, box])
    return atomic_write_text(Path(path), buf.getvalue())


def load_manifest(path: str | Path) -> dict[str, list[Sample]]:
    """Read a manifest; relative paths are taken relative to the manifest's folder."""
    path = Path(path)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a manifest saved again by Excel has a BOM
        reader = csv.DictReader(f)
        missing = {"path", "breed", "split"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: not a dogbreed manifest (missing columns {sorted(missing)})")
        for row in reader:
            p = row["path"]
            if not os.path.isabs(p):
                p = str(path.parent / p)
            box_txt = (row.get("box") or "").strip()
            box = None
            if box_txt:
                vals = [float(v) for v in box_txt.split()]
                if len(vals) != 4:
                    raise DataError(f"{path}: bad box {box_txt!r} for {row['path']}")
                box = (vals[0], vals[1], vals[2], vals[3])
            out.setdefault(row["split"], []).append(Sample(p, row["breed"], row.get("wnid") or None, box))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Preprocessed-image cache


def _file_sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ImageCache:
    """Preprocessed, not yet normalised, images as PNG under ``<dir>/<key>/<sha1>.png``.

    The key covers every preprocessing setting that changes pixels (mean/std do not: normalisation runs after
    the cache) and the stage; the file name covers the photo's bytes (and its box when one is used), so an edited
    photo or a changed setting never reads a stale entry. PNG, not pickles: lossless and safe to load.
    """

    def __init__(self, cfg: Preprocess, stage: str, root: str | Path | None = None):
        pre = {k: v for k, v in cfg.to_dict().items() if k not in ("mean", "std")}
        key = hashlib.sha1(json.dumps({"v": 1, "pre": pre, "stage": stage}, sort_keys=True).encode()).hexdigest()
        self.dir = Path(root) if root is not None else cache_dir() / "preprocessed"
        self.dir = self.dir / key[:20]
        self._digests: dict[str, str] = {}

    def entry(self, path: str, box: Box | None) -> Path:
        d = self._digests.get(path)
        if d is None:
            d = self._digests[path] = _file_sha1(path)
        if box is not None:
            d = hashlib.sha1(f"{d}:{box}".encode()).hexdigest()
        return self.dir / f"{d}.png"

    def get(self, entry: Path) -> Image.Image | None:
        try:
            with Image.open(entry) as img:
                img.load()
                return img.convert("RGB")
        except FileNotFoundError:
            return None
        except Exception:  # a damaged entry (killed mid-write on a non-atomic FS) is rebuilt, not fatal
            return None

    def put(self, entry: Path, img: Image.Image) -> None:
        with atomic_write(entry, durable=False) as tmp:
            img.save(tmp, format="PNG", compress_level=1)


# ---------------------------------------------------------------------------------------------------------------
# Dataset and loader


def _item_rng(seed: int, epoch: int, index: int) -> random.Random:
    # Derived, not drawn from a shared stream, so a view depends only on (seed, epoch, index): the same with any
    # number of workers or any order, and new each epoch.
    h = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(h, "little"))


class BreedDataset(Dataset):
    """Samples -> (normalised CHW float tensor, class index).

    With ``augment`` every item is a random view whose randomness comes from (seed, epoch, index); call
    ``set_epoch`` before each epoch (``make_loader``'s loader does it for you) to get new views. A photo that
    cannot be decoded is replaced by the next good one, with a warning, so one bad file does not end a run.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: list[str],
        preprocess: Preprocess,
        augment: Augment | None = None,
        seed: int = 0,
        cache: bool = False,
        cache_root: str | Path | None = None,
    ):
        self.samples = list(samples)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({s.breed for s in self.samples} - set(self.class_to_idx))
        if unknown:
            raise DataError(f"breeds not in classes: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        self.labels = [self.class_to_idx[s.breed] for s in self.samples]
        self.preprocess = preprocess
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._cache = ImageCache(preprocess, self._stage(), cache_root) if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _stage(self) -> str:
        if self.augment is None:
            return "final"
        return "aug-fixed" if self.augment.rrc_scale[0] >= 1.0 else "aug-base"

    def _base_short_side(self) -> int:
        return int(math.ceil(self.preprocess.size / self.preprocess.crop_pct))

    def _decode(self, s: Sample) -> Image.Image:
        """Decode + everything deterministic: what the cache stores."""
        cfg = self.preprocess
        use_box = cfg.box_crop and s.box is not None
        # JPEG draft mode shrinks the image, which would put an annotation box (original pixels) in the wrong place.
        img = load_image(s.path, draft_size=None if use_box else self._base_short_side())
        stage = self._stage()
        if stage in ("final", "aug-fixed"):
            return preprocess_image(img, cfg, s.box)
        if use_box:
            img = crop_box(img, s.box, cfg.box_margin)
        img = histogram_ops(img, cfg.autocontrast, cfg.equalize)
        # A modest size before random crops: the crops that follow rarely need more pixels than this.
        if min(img.size) > self._base_short_side():
            img = resize(img, self._base_short_side(), "shorter", interpolation=cfg.interpolation)
        return img

    def _base(self, i: int) -> Image.Image:
        s = self.samples[i]
        if self._cache is None:
            return self._decode(s)
        entry = self._cache.entry(s.path, s.box if self.preprocess.box_crop else None)
        img = self._cache.get(entry)
        if img is None:
            img = self._decode(s)
            self._cache.put(entry, img)
        return img

    def view(self, i: int, epoch: int | None = None) -> Image.Image:
        """The image the model gets for item ``i`` (before normalisation): for previews and debugging."""
        img = self._base(i)
        if self.augment is None:
            return img
        rng = _item_rng(self.seed, self.epoch if epoch is None else epoch, i)
        return augment_image(img, self.preprocess.size, self.augment, rng, self.preprocess.interpolation)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self.samples)
        for k in range(min(n, 20)):
            j = (i + k) % n
            try:
                img = self.view(j)
            except ImageDecodeError as e:
                warnings.warn(f"skipping unreadable image {self.samples[j].path}: {e}", stacklevel=2)
                continue
            return to_tensor(img, self.preprocess.mean, self.preprocess.std), self.labels[j]
        raise ImageDecodeError(f"no readable image near index {i}; run `dogbreed data inspect` on the dataset")


class EpochLoader(DataLoader):
    """A DataLoader that advances its dataset's epoch on every pass, so augmented views change each epoch.

    Workers get a fresh copy of the dataset at the start of each pass (persistent_workers is off), so the epoch
    set here reaches them.
    """

    def __init__(self, dataset: Dataset, *args: Any, start_epoch: int = 0, **kwargs: Any):
        super().__init__(dataset, *args, **kwargs)
        self.epoch = start_epoch

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        # the shuffling order too: a DistributedSampler draws the same permutation until told the epoch (training
        # builds a loader per epoch, so only a loader used from a notebook over several passes met it)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return super().__iter__()


def make_loader(
    samples: Sequence[Sample],
    classes: list[str],
    preprocess: Preprocess,
    augment: Augment | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    cache: bool = False,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over ``BreedDataset``; shuffling order and augmentations are reproducible by ``seed``.

    Shuffling goes through a `DistributedSampler` seeded with ``seed`` even in one process (``world`` 1): process
    ``rank`` of ``world`` then takes every world-th photo of the same permutation, so with ``batch_size`` = global
    batch / world the processes' batches at step k together are the single-process batch k (train/distributed.py).
    """
    from torch.utils.data.distributed import DistributedSampler

    ds = BreedDataset(samples, classes, preprocess, augment, seed=seed, cache=cache)
    gen = torch.Generator()
    gen.manual_seed(seed)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed) if shuffle else None
    return EpochLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, generator=gen,
                       persistent_workers=False, pin_memory=pin_memory)


# ---------------------------------------------------------------------------------------------------------------
# Preview


def pick_preview(samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
    """``n`` samples spread over breeds (round-robin over shuffled breeds), reproducible by seed."""
    rng = random.Random(seed)
    groups = [list(g) for g in _by_breed(samples).values()]
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(g)
    out: list[Sample] = []
    while len(out) < n and any(groups):
        for g in groups:
            if g and len(out) < n:
                out.append(g.pop())
    return out


def preview_grid(
    samples: Sequence[Sample],
    out: str | Path,
    *,
    preprocess: Preprocess | None = None,
    augment: Augment | None = None,
    n: int = 16,
    seed: int = 0,
    epoch: int = 0,
    unreadable: list[str] | None = None,
) -> Path:
    """A labelled PNG grid of what the model sees (augmented views by default); written atomically. A photo that
    cannot be read is a red tile saying so, and its path goes to ``unreadable`` (training leaves it out)."""
    from PIL import ImageDraw, ImageFont

    cfg = preprocess or Preprocess()
    aug = augment if augment is not None else Augment()
    chosen = pick_preview(samples, n, seed)
    if not chosen:
        raise DataError("no samples to preview")
    ds = BreedDataset(chosen, sorted({s.breed for s in chosen}), cfg, aug, seed=seed)
    tiles: list[tuple[Image.Image | None, str]] = []
    for i, s in enumerate(chosen):
        try:
            tiles.append((ds.view(i, epoch), s.breed))
        except ImageDecodeError as e:
            tiles.append((None, f"unreadable: {e}"[:40]))
            if unreadable is not None:
                unreadable.append(str(s.path))
    size = cfg.size
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    label_h = max(16, size // 10)
    pad = 4
    font = ImageFont.load_default(size=max(10, label_h - 4))
    sheet = Image.new("RGB", (cols * (size + pad) + pad, rows * (size + label_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (img, label) in enumerate(tiles):
        x = pad + (k % cols) * (size + pad)
        y = pad + (k // cols) * (size + label_h + pad)
        if img is not None:
            sheet.paste(img.resize((size, size)) if img.size != (size, size) else img, (x, y))
        else:
            draw.rectangle((x, y, x + size - 1, y + size - 1), outline=(200, 0, 0))
        text = label
        while len(text) > 1 and draw.textlength(text, font=font) > size - 4:
            text = text[:-2].rstrip() + "…"
        draw.text((x + 2, y + size + 1), text, fill=(0, 0, 0), font=font)
    out = Path(out)
    with atomic_write(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
