"""Where photos come from: files, folders, globs and CSV/Parquet manifests -> paths, lazily and in a fixed order.

One list of image extensions and one folder walker for the whole package (prediction, batch runs, data sets,
adapt). A path that cannot be read is kept, so that it gets an error in its place; nothing here raises for one.
"""

from __future__ import annotations

import csv
import glob
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BatchError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


def is_image_name(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


class UnlistedFolder(str):
    """A folder the walk could not list (permission denied, an I/O error), yielded in its photos' place so that it
    gets an error of its own: its photos had been left out of a batch run without a word."""


def walk_files(root: str | Path, _seen: set[tuple[int, int]] | None = None) -> Iterator[str]:
    """Every file under ``root`` (not folders), recursively, one directory listed at a time.

    Entries are sorted by name with "/" appended to folders, which yields exactly the order of sorting every full
    path as a string without holding the whole tree in memory. A symlinked folder is followed, once: a folder this
    walk has entered already, by a link or not (a cycle, or two links to one folder, which had doubled at every
    level of such links), is not read again. It had been skipped without a word, its photos left out of the run. A
    dangling link, a link loop, a FIFO or a folder that cannot be listed (`UnlistedFolder`) is yielded, for the
    reader to report.
    """
    seen = _seen if _seen is not None else set(filter(None, [_folder_key(str(root))]))
    try:
        entries = list(os.scandir(root))
    except OSError:
        if os.path.isdir(root):
            yield UnlistedFolder(str(root))
        return
    keyed = sorted(((e.name + "/" if _folder(e) else e.name), e) for e in entries)
    for _, e in keyed:
        if not _folder(e):
            yield os.path.join(str(root), e.name)
            continue
        key = _folder_key(e.path)
        if key is None or key not in seen:
            if key is not None:
                seen.add(key)
            yield from walk_files(e.path, seen)


def walk_images(root: str | Path) -> Iterator[str]:
    """`walk_files` restricted to image file names."""
    return (p for p in walk_files(root) if is_image_name(p) or isinstance(p, UnlistedFolder))


def _folder(e: os.DirEntry) -> bool:
    try:
        return e.is_dir()  # a symlinked folder too (`walk_files` ends its cycles)
    except OSError:
        return False


def _folder_key(path: str) -> tuple[int, int] | None:
    """What makes a folder the same folder, whichever link leads to it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:  # e.g. "File name too long": not a folder; reading it reports why
        return False


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files, folders (recursive, images only, sorted) and globs -> paths, in the order given (manifests are
    files here; `iter_sources` reads them)."""
    out: list[str] = []
    for item in inputs:
        s = str(item)
        if _is_dir(Path(s)):
            out += walk_images(str(Path(s)))  # pathlib's spelling ("./a/" -> "a"), as these paths always had
        elif not os.path.lexists(s) and any(c in s for c in "*?["):
            # A pattern that matches nothing stays, so it is reported ("file not found") rather than dropped.
            # A folder it matches is read as a folder given by name is: `'albums/20*'` had said "file not found".
            # Each photo once: `albums/**` matches every folder below, and the files in them too.
            found = dict.fromkeys(w for f in sorted(glob.glob(s, recursive=True))
                                  for w in (walk_images(f) if os.path.isdir(f) else [f]))
            out += list(found) or [s]
        else:
            out.append(s)
    return out


def is_manifest(item: str) -> bool:
    return Path(item).suffix.lower() in MANIFEST_SUFFIXES and os.path.isfile(item)  # False, not an error, for bad paths


def read_manifest(path: str | Path, column: str = "path") -> Iterator[str]:
    """Paths from a CSV or Parquet manifest's ``column``, streamed; relative ones are taken from the manifest's
    folder, so a manifest and its photos can move together."""
    base = Path(path).parent
    if Path(path).suffix.lower() == ".csv":
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which had become part of the first column's
        # name; surrogateescape: bytes that are not UTF-8 are a file name's own bytes (a manifest written in Latin-1
        # names such files), which the OS takes back as they are, where a UnicodeDecodeError traceback had ended it.
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise BatchError(f"manifest {path}: no {column!r} column (columns: {reader.fieldnames})")
            for row in reader:
                yield _resolve(row[column], base)
        return
    pq = pyarrow_parquet()
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's errors for a damaged file are many
        raise BatchError(f"manifest {path}: not a readable Parquet file ({e})") from None
    if column not in pf.schema_arrow.names:
        raise BatchError(f"manifest {path}: no {column!r} column (columns: {pf.schema_arrow.names})")
    for rb in pf.iter_batches(columns=[column], batch_size=8192):
        for v in rb.column(0).to_pylist():
            yield _resolve(v, base)


def _resolve(p: str | None, base: Path) -> str:
    p = "" if p is None else str(p)
    return p if not p or os.path.isabs(p) else str(base / p)


def iter_sources(inputs: Iterable[str | Path], path_column: str = "path") -> Iterator[str]:
    """Files, folders, globs and manifests -> paths, lazily and in a fixed order (so resuming can count)."""
    for item in inputs:
        s = str(item)
        if os.path.isdir(s):
            yield from walk_images(s)
        elif is_manifest(s):
            yield from read_manifest(s, path_column)
        else:  # a file, a glob, or a missing path kept so that it gets an error row in its place
            yield from expand_inputs([s])


@dataclass(frozen=True)
class Sources:
    """`iter_sources` of ``inputs`` after the first ``skip``, as a re-iterable (and picklable) value: each pass
    starts over, lazily, which decode worker processes rely on."""

    inputs: tuple[str, ...]
    path_column: str = "path"
    skip: int = 0

    def __iter__(self) -> Iterator[str]:
        return itertools.islice(iter_sources(self.inputs, self.path_column), self.skip, None)


def count_sources(inputs: Iterable[str | Path], path_column: str = "path") -> int:
    return sum(1 for _ in iter_sources(inputs, path_column))


def pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # an optional extra: CSV and JSONL need nothing beyond the base install
        raise BatchError("Parquet needs pyarrow: pip install 'dogbreed[parquet]'") from e
    return pq
