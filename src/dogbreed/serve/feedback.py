"""User feedback on predictions: a small SQLite table plus the photos, and an export to a folder-per-breed dataset.

Photos are stored only when a user chooses to send feedback (never on plain predictions), named by their sha256 so
the same photo sent twice is kept once. Feedback on one dog of several names its box: the photo is stored whole, and
the export writes that dog's crop (the square the predictor reads it from), so a photo of a Pug beside a Border
collie does not teach "Pug" from both.
"""

from __future__ import annotations

import errno
import io
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import Image

from ..breeds import Breed, BreedIndex
from ..fileio import atomic_write_bytes, write_error
from ..paths import cache_dir
from .limits import fmt_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    image_file TEXT NOT NULL,
    predicted TEXT NOT NULL,
    breed_wnid TEXT,
    breed_name TEXT NOT NULL,
    breed_folder TEXT NOT NULL,
    created_at TEXT NOT NULL,
    size_bytes INTEGER,
    box TEXT
);
CREATE INDEX IF NOT EXISTS feedback_sha256 ON feedback (sha256);
"""

# Pillow format -> file extension for the stored copy (the loader picks images by extension).
_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "MPO": ".jpg"}


def storable(data: bytes) -> tuple[bytes, str | None]:
    """The bytes to store for an upload and their Pillow format: as sent where the dataset loader reads the format
    (`_EXT`'s extensions); any other format Pillow decoded (AVIF, JPEG 2000, ICO, TGA, PPM, QOI, ...) as a PNG of its
    first frame. Such photos were stored as ``.img``, which `feedback export` counted and no dataset read."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if (im.format or "").upper() in _EXT:
                return data, im.format
            im.load()
            exif = im.getexif()
            keep = im if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16") else im.convert(
                "RGBA" if "A" in im.getbands() else "RGB")
            buf = io.BytesIO()
            keep.save(buf, format="PNG", exif=exif)  # keeps its EXIF orientation for the loader to apply
            return buf.getvalue(), "PNG"
    except Exception:  # noqa: BLE001 - the route decoded it already; kept as sent, as before
        return data, None


def default_feedback_db() -> Path:
    return cache_dir() / "feedback" / "feedback.sqlite3"


def images_dir_for(db_path: Path) -> Path:
    """Photos live in a folder next to the database, so moving the folder moves both."""
    return db_path.parent / "feedback-images"


def breed_folder(breed: Breed) -> str:
    """Folder name for a breed in an exported dataset: Stanford style ('n02099601-golden_retriever') when known."""
    if breed.folder:
        return breed.folder
    slug = re.sub(r"[^\w\-]+", "_", breed.name.strip()).strip("_") or "unknown"
    return f"{breed.wnid}-{slug}" if breed.wnid else slug


def find_breed(classes: list[Breed], name_or_wnid: str) -> Breed | None:
    """Match a breed the model knows by wnid, folder or any spelling of its name."""
    i = BreedIndex(classes).find(name_or_wnid)
    return None if i is None else classes[i]


def breed_not_found(classes: list[Breed], name_or_wnid: str) -> str:
    """Why `find_breed` found nothing, with what the text may mean (`BreedIndex.unknown`)."""
    return BreedIndex(classes).unknown(name_or_wnid)


class FeedbackQuotaExceeded(Exception):
    """The store is full (``daily`` False) or today's quota is used up (``daily`` True, ``retry_after_s`` set)."""

    def __init__(self, message: str, daily: bool, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.daily = daily
        self.retry_after_s = retry_after_s


class FeedbackStorageError(Exception):
    """The database or the photo folder cannot be written (read-only, disk full...); nothing was stored.
    ``full``: the disk or the quota is full (the service answers 507), not read-only or broken (503)."""

    def __init__(self, message: str, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


def _disk_full(e: BaseException) -> bool:
    """SQLite says SQLITE_FULL ("database or disk is full"); a photo write says ENOSPC or EDQUOT."""
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e)
    err = write_error("", e)
    return err is not None and err.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class FeedbackRecord:
    id: int
    sha256: str
    predicted: str
    breed_wnid: str | None
    breed_name: str
    created_at: str
    box: list[int] | None = None


class FeedbackStore:
    """SQLite-backed store; one short-lived connection per call so it is safe from any worker thread.

    ``max_bytes`` caps all stored photos together, ``per_day`` the photos accepted per UTC day (None: no cap).
    """

    def __init__(self, db_path: str | Path | None = None, max_bytes: int | None = None,
                 per_day: int | None = None) -> None:
        self.db_path = Path(db_path) if db_path else default_feedback_db()
        self.images_dir = images_dir_for(self.db_path)
        self.max_bytes = max_bytes
        self.per_day = per_day
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        # Created on first use, so starting the server does not write anything until someone sends feedback.
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=10)
        con.executescript(SCHEMA)
        have = {r[1] for r in con.execute("PRAGMA table_info(feedback)")}
        for column, kind in (("size_bytes", "INTEGER"), ("box", "TEXT")):  # a database from before quotas, boxes
            if column not in have:
                con.execute(f"ALTER TABLE feedback ADD COLUMN {column} {kind}")
                con.commit()
        return con

    def _check_quota(self, con: sqlite3.Connection, sha256: str, size: int, now: datetime) -> None:
        day = now.date().isoformat()
        if self.per_day is not None:
            (today,) = con.execute("SELECT COUNT(*) FROM feedback WHERE created_at >= ?", (day,)).fetchone()
            if today >= self.per_day:
                midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
                raise FeedbackQuotaExceeded(f"the daily feedback quota ({self.per_day} photos) is used up; it resets"
                                            " at midnight UTC", daily=True,
                                            retry_after_s=max(1, int((midnight - now).total_seconds())))
        if self.max_bytes is not None:
            if con.execute("SELECT 1 FROM feedback WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone():
                return  # the photo is stored already; another row for it costs no space
            (used,) = con.execute("SELECT COALESCE(SUM(s), 0) FROM (SELECT MAX(size_bytes) AS s FROM feedback"
                                  " GROUP BY sha256)").fetchone()
            if used + size > self.max_bytes:
                # in the MB of --feedback-max-mb (MiB, as every limit), to a tenth or in KB: a 0.6 MB quota read
                # "(1 of 1 MB used)", and a 2 MB one "of 2.1 MB"
                raise FeedbackQuotaExceeded(f"feedback storage is full ({fmt_bytes(used, self.max_bytes)} of "
                                            f"{fmt_bytes(self.max_bytes, used)} used; this photo takes "
                                            f"{fmt_bytes(size)})", daily=False)

    def add(self, image: bytes, image_format: str | None, sha256: str, predicted: str, breed: Breed,
            box: Sequence[int] | None = None) -> FeedbackRecord:
        """Store the photo and its row together: if either cannot be written, neither is kept. ``box``: the dog the
        feedback is about, in the photo's pixels (None: the photo as a whole)."""
        ext = _EXT.get((image_format or "").upper(), ".img")
        name = f"{sha256}{ext}"
        now = datetime.now(timezone.utc)
        created = now.isoformat(timespec="seconds")
        target = self.images_dir / name
        wrote_photo = False
        with self._lock:
            try:
                con = self._connect()
            except (sqlite3.Error, OSError) as e:
                raise FeedbackStorageError(f"cannot open the feedback database {self.db_path}: {e}",
                                           _disk_full(e)) from e
            try:
                con.execute("BEGIN IMMEDIATE")  # the quota check and the insert see the same table
                self._check_quota(con, sha256, len(image), now)
                cur = con.execute(
                    "INSERT INTO feedback (sha256, image_file, predicted, breed_wnid, breed_name, breed_folder,"
                    " created_at, size_bytes, box) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha256, name, predicted, breed.wnid, breed.name, breed_folder(breed), created, len(image),
                     _box_text(box)),
                )
                row_id = int(cur.lastrowid or 0)
                if not target.exists():
                    atomic_write_bytes(target, image)  # atomic, so an export never sees half a photo
                    wrote_photo = True
                con.commit()
            except FeedbackQuotaExceeded:
                con.rollback()
                raise
            except (sqlite3.Error, OSError) as e:
                con.rollback()
                if wrote_photo:
                    target.unlink(missing_ok=True)  # no photo without its row
                raise FeedbackStorageError(f"cannot store feedback in {self.db_path}: {e}", _disk_full(e)) from e
            finally:
                con.close()
        return FeedbackRecord(row_id, sha256, predicted, breed.wnid, breed.name, created,
                              list(box) if box is not None else None)

    def records(self) -> list[dict]:
        """Every row, oldest first, read-only (an export from a database it may not write, and from before a column
        was added, works: such rows lack that key)."""
        if not self.db_path.exists():
            return []
        con = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM feedback ORDER BY id")]
        finally:
            con.close()


def export_feedback(db_path: str | Path | None, out: str | Path) -> dict[str, int]:
    """Write the feedback photos as ``out/<breed folder>/<sha256>.<ext>``, and each dog of several that got its
    own feedback as ``<sha256>-<x0>_<y0>_<x1>_<y1>.jpg``, its crop; returns photos per breed folder.

    When the same photo (or the same dog in it) got several answers, the latest one wins, so a user's correction
    replaces a mistake, also in a folder exported before: the photo's copy under its old breed is removed (it
    stayed, and retraining saw the photo under both breeds). Each file is written atomically.
    """
    store = FeedbackStore(db_path)
    latest: dict[tuple[str, str | None], dict] = {}
    for r in store.records():
        latest[(r["sha256"], r.get("box"))] = r
    out = Path(out)
    before: dict[str, list[Path]] = {}  # what an earlier export wrote here, by file name (the photo's sha256)
    for f in out.glob("*/*"):
        before.setdefault(f.name, []).append(f)
    counts: dict[str, int] = {}
    for r in latest.values():
        src = store.images_dir / r["image_file"]
        if not src.exists():
            continue  # a photo deleted by hand (e.g. on request) is simply left out
        folder = out / r["breed_folder"]
        folder.mkdir(parents=True, exist_ok=True)
        if r.get("box"):
            box = [int(v) for v in r["box"].split(",")]
            name = f"{r['sha256']}-{'_'.join(map(str, box))}.jpg"
            atomic_write_bytes(folder / name, dog_crop_jpeg(src, box))
        else:
            name = r["image_file"]
            atomic_write_bytes(folder / name, src.read_bytes())
        for stale in before.get(name, []):
            if stale.parent != folder:
                stale.unlink(missing_ok=True)
        counts[r["breed_folder"]] = counts.get(r["breed_folder"], 0) + 1
    for folder in {f.parent for fs in before.values() for f in fs}:  # a breed emptied by corrections: no class left
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return dict(sorted(counts.items()))


def dog_crop_jpeg(photo: Path, box: Sequence[int]) -> bytes:
    """The square the predictor reads a dog from (`regions.window` around its box, clipped to the photo), from the
    upright photo, as a JPEG."""
    from ..inference.decode import decode
    from ..inference.regions import window

    img = decode(photo)
    x0, y0, x1, y1 = window(box)
    buf = io.BytesIO()
    img.crop((max(0, round(x0)), max(0, round(y0)), min(img.width, round(x1)), min(img.height, round(y1)))).save(
        buf, format="JPEG", quality=95)
    return buf.getvalue()


# A box's smallest side (or the photo's, when smaller): a dog's crop is a training photo, and a box of 0,0,1,1 (a
# client sending fractions of the photo) was stored and exported as a 1x1 photo of the breed. Small enough for any
# dog box a predict answer gives (the page sends those back).
MIN_BOX_SIDE = 8
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?", re.ASCII)  # as the schema's pattern: no sign, exponent, _ or other digits


def parse_box(text: str, size: tuple[int, int]) -> list[int]:
    """A dog's box as the feedback form sends it, "x0,y0,x1,y1" in the photo's pixels (the `box` of a dog in the
    predict answer) -> four integers; ValueError with a sentence when it is not a box inside a photo of ``size``,
    or one too small to show a dog (`MIN_BOX_SIDE`)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(_NUMBER.fullmatch(p) for p in parts):
        raise ValueError(f"box {text!r} is not four numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = (int(round(float(p))) for p in parts)
    w, h = size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"box {text!r} is not inside the {w}x{h} photo (x0 < x1 <= {w}, y0 < y1 <= {h})")
    if x1 - x0 < min(MIN_BOX_SIDE, w) or y1 - y0 < min(MIN_BOX_SIDE, h):
        raise ValueError(f"box {text!r} is {x1 - x0}x{y1 - y0} pixels, too small for a dog (at least "
                         f"{MIN_BOX_SIDE} a side); a box is in the photo's pixels, as a dog's `box` in the predict "
                         "answer, not in fractions of the photo")
    return [x0, y0, x1, y1]


def _box_text(box: Sequence[int] | None) -> str | None:
    return None if box is None else ",".join(str(int(v)) for v in box)
