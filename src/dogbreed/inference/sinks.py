"""Sinks: predictions -> rows in CSV, JSONL or Parquet, written as they are produced, with one resume rule.

The rule, for the local engine and Ray alike: the rows already in an output must be the first inputs, in order
(checked), and a rerun skips exactly those. Rows come out one per input in input order, so that is all a resume
needs to know.

- ``.csv`` / ``.jsonl``: appended and flushed batch by batch; on resume a torn last line is cut off.
- ``.parquet``: a folder of numbered part files (`PART_ROWS` rows each), each written atomically
  (`fileio.atomic_write`), so a part is whole or absent (``pyarrow.parquet.read_table(out)`` reads the folder).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import BatchError
from ..fileio import atomic_write, utf8_text
from ..resolve import PACKAGED
from .options import PredictOptions
from .scoring import Prediction
from .sources import pyarrow_parquet

OUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
PART_ROWS = 1024  # rows per Parquet part: at most this many answers are redone after an interruption
BASE_COLUMNS = ["path", "verdict", "dog_probability", "several_breeds_likely", "error"]
# With the detection stage: how many dogs the photo holds, which one the row describes (1 = the main dog; empty
# when none), and that dog's box in the photo's pixels.
DOG_COLUMNS = ["dogs", "dog", "box_x0", "box_y0", "box_x1", "box_y1"]
# Options that change answers without changing the rows' layout, so the rows cannot show them. A run records them
# beside its output (`settings_path`) and a resumed run must ask for the same, or two models' answers would share
# one file unseen. (--top-k, --whole-photo and --per-dog show in the layout and are checked there; precision is
# left out: bf16 and fp32 machines of one cluster give the same answers but for rounding.)
RUN_SETTINGS = ("model", "quality", "dog_detector", "dog_threshold", "dog_target_recall", "dog_cascade",
                "breed_cascade")
# Keys a JSONL answer carries only when its option is given: a resumed run must give it too, or the file would mix
# answers with and without them.
ANSWER_KEYS = {"look_alikes": "--gallery", "explanation": "--explain"}


def columns(top_k: int, dogs: bool = False) -> list[str]:
    return (BASE_COLUMNS + (DOG_COLUMNS if dogs else [])
            + [f"{k}_{i}" for i in range(1, top_k + 1) for k in ("breed", "wnid", "probability")])


def flat_row(p: Prediction, top_k: int, dogs: bool = False) -> dict[str, Any]:
    """One prediction as one flat row (CSV and Parquet): the top-k breeds as breed_i / wnid_i / probability_i;
    with ``dogs``, the dog count and the main dog's box."""
    return flat_rows(p, top_k, dogs)[0]


def flat_rows(p: Prediction, top_k: int, dogs: bool = False, per_dog: bool = False) -> list[dict[str, Any]]:
    """A prediction's rows: one for the photo (its main dog), or with ``per_dog`` one for each dog it holds (one
    row still for a photo with none), each with that dog's answer and box."""
    found = list(p.dogs or [])
    answers: list[Any] = found if per_dog and len(found) > 1 else [p]
    rows = []
    for n, a in enumerate(answers, 1):
        row: dict[str, Any] = {"path": p.path, "verdict": a.verdict if p.error is None else "error",
                               "dog_probability": None if p.error else a.dog_probability,
                               "several_breeds_likely": None if p.error else a.several_breeds_likely,
                               "error": p.error}
        if dogs:
            box = (a.box if a is not p else found[0].box) if found else [None] * 4
            row.update({"dogs": None if p.error else len(found), "dog": n if found else None,
                        "box_x0": box[0], "box_y0": box[1], "box_x1": box[2], "box_y1": box[3]})
        for i in range(top_k):
            b = a.breeds[i] if i < len(a.breeds) else None
            row[f"breed_{i + 1}"] = b.name if b else None
            row[f"wnid_{i + 1}"] = b.wnid if b else None
            row[f"probability_{i + 1}"] = b.probability if b else None
        rows.append(row)
    return rows


def parquet_schema(top_k: int, dogs: bool = False) -> Any:
    import pyarrow as pa

    fields = [pa.field("path", pa.string()), pa.field("verdict", pa.string()),
              pa.field("dog_probability", pa.float64()), pa.field("several_breeds_likely", pa.bool_()),
              pa.field("error", pa.string())]
    if dogs:
        fields += [pa.field(c, pa.int64()) for c in DOG_COLUMNS]
    for i in range(1, top_k + 1):
        fields += [pa.field(f"breed_{i}", pa.string()), pa.field(f"wnid_{i}", pa.string()),
                   pa.field(f"probability_{i}", pa.float64())]
    return pa.schema(fields)


def run_settings(options: Any) -> dict[str, Any]:
    """`RUN_SETTINGS` of a `PredictOptions`, a model given as a path made absolute (the same model from
    another working directory is the same model)."""
    got = {k: getattr(options, k) for k in RUN_SETTINGS}
    for k in ("model", "dog_detector"):
        v = got[k]
        if isinstance(v, str) and v not in (*PACKAGED, "none") and Path(v).exists():
            got[k] = str(Path(v).resolve())
    return json.loads(json.dumps(got))  # as it reads back


def settings_path(out: str | Path) -> Path:
    """Where a run's `run_settings` are kept: inside a Parquet folder (readers skip names starting with _),
    beside a CSV or JSONL file."""
    out = Path(out)
    return out / "_dogbreed.json" if out_format(out) == "parquet" else out.with_name(out.name + ".dogbreed.json")


def _asked(key: str, value: Any) -> str:
    """An option's value as the command line spells it, from the option's own declaration (`PredictOptions`)."""
    declared = next(f.metadata["flags"] for f in fields(PredictOptions) if f.name == key)
    flag = declared[0] if declared else "--" + key.replace("_", "-")  # Typer's name when none is declared
    if isinstance(value, bool):
        on, _, off = flag.partition("/")
        return on if value else off or f"--no-{on[2:]}"
    return f"no {flag}" if value is None else f"{flag} {value}"


def out_format(out: str | Path) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in OUT_FORMATS:
        raise BatchError(f"--out {out}: the suffix must be one of {sorted(OUT_FORMATS)}")
    return OUT_FORMATS[suffix]


class RowWriter:
    """Appends rows to ``out``; ``done`` is how many photos were already there, complete (after repairing a torn
    tail), ``done_paths()`` streams their paths so the caller can check they are the same inputs.

    ``dogs``: rows carry the dog columns (`DOG_COLUMNS`); ``per_dog``: one row per dog, so a photo may span several
    rows, which are always written together (a Parquet part ends between photos; a CSV photo whose last rows were
    lost to an interruption is cut off and redone)."""

    def __init__(self, out: str | Path, top_k: int, overwrite: bool = False, dogs: bool = False,
                 per_dog: bool = False, n_breeds: int | None = None, settings: dict[str, Any] | None = None,
                 answer_keys: Sequence[str] = ()):
        # No more breed columns than the model has breeds: `-k 200` wrote 80 columns that were always empty, and a
        # huge -k ran out of memory building them.
        top_k = min(top_k, n_breeds) if n_breeds else top_k
        self.out, self.top_k, self.fmt = Path(out), top_k, out_format(out)
        self.answer_keys = tuple(answer_keys)  # `ANSWER_KEYS` this run's JSONL answers carry
        self._lock = _lock(self.out)
        self.n_breeds = n_breeds  # the model's breeds: an answer lists min(top_k, n_breeds) (None: not known)
        self.dogs, self.per_dog = dogs or per_dog, per_dog and self.fmt != "jsonl"
        self.cols = columns(top_k, self.dogs)
        try:
            if overwrite:
                _remove(self.out)
            self.done = self._open()
            if settings is not None:
                self._check_settings(settings)
        except BaseException:  # refused: the lock must not outlive the refusal (a notebook keeps the traceback)
            self.release()
            raise

    def _check_settings(self, settings: dict[str, Any]) -> None:
        """A fresh output records ``settings`` (`run_settings`); rows already there must have been written with the
        same ones. Rows without a record (written before there was one) are resumed as before."""
        path = settings_path(self.out)
        if self.done == 0:
            with atomic_write(path) as tmp:
                tmp.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
            return
        try:
            had = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise BatchError(f"{path} cannot be read ({e}); it records the options {self.out} was written with: "
                             "remove it to resume anyway, or use --overwrite") from None
        if not isinstance(had, dict):
            raise BatchError(f"{path} is not a record of options; remove it to resume anyway, or use --overwrite")
        for k in RUN_SETTINGS:
            if k in had and had[k] != settings.get(k):
                raise BatchError(f"{self.out} was written with {_asked(k, had[k])}, and this run asks for "
                                 f"{_asked(k, settings.get(k))}; run it with the options of the first run, or "
                                 "use --overwrite or another --out")

    # -- resume ---------------------------------------------------------------------------------------------
    def _open(self) -> int:
        if self.fmt == "parquet":
            return self._open_parquet()
        if self.out.is_dir():
            raise BatchError(f"{self.out} is a folder; --out .{self.fmt} is one file (only .parquet output is a "
                             "folder of parts)")
        done = _repair_text(self.out) if self.out.exists() else 0
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "csv" and done:
            with open(self.out, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header != self.cols:
                raise BatchError(f"{self.out} has other columns ({_column_difference(header, self.cols)}), e.g. "
                                 "another --top-k, or dog columns with or without --whole-photo or --dog-detector "
                                 "none; use --overwrite or another --out")
            done -= 1  # the header line
            if self.per_dog:
                done = self._repair_photos()  # checks the layout on the rows it reads anyway
            elif self.dogs:
                n, d = self.cols.index("dogs"), self.cols.index("dog")
                with open(self.out, newline="", encoding="utf-8") as f:
                    rows = csv.reader(f)
                    next(rows)  # the header, checked above
                    self._check_layout((r[n] or None, r[d] or None) for r in rows if len(r) > d)
        if self.fmt == "jsonl" and done:
            self._check_jsonl()
        self._f = open(self.out, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self.fmt == "csv":
            self._csv = csv.DictWriter(self._f, self.cols, lineterminator="\n")
            if self._f.tell() == 0:
                self._csv.writeheader()
        return done

    def _open_parquet(self) -> int:
        pq = pyarrow_parquet()
        if self.out.exists() and not self.out.is_dir():
            raise BatchError(f"{self.out} is a file; Parquet output is a folder of part files")
        self.out.mkdir(parents=True, exist_ok=True)
        for tmp in _leftovers(self.out):  # a part that was being written when the run stopped
            tmp.unlink()
        self._parts = sorted(self.out.glob("part-*.parquet"))
        done = 0
        for i, part in enumerate(self._parts):
            if part.name != _part_name(i):
                raise BatchError(f"{self.out}: part files are not numbered 0..n-1 ({part.name})")
            try:
                meta = pq.ParquetFile(part)
            except Exception as e:  # noqa: BLE001 - pyarrow's errors for a damaged file are many
                raise BatchError(f"{part} cannot be read ({e}); it was not written by this tool whole (parts are "
                                 "written atomically): remove it to redo its rows, or use --overwrite") from None
            if meta.schema_arrow.names != self.cols:
                raise BatchError(f"{part} has other columns ({_column_difference(meta.schema_arrow.names, self.cols)}"
                                 "), e.g. another --top-k, or dog columns with or without --whole-photo or "
                                 "--dog-detector none; use --overwrite or another --out")
            done += (meta.metadata.num_rows if not self.per_dog else
                     sum(_starts_photo(d) for d in pq.read_table(part, columns=["dog"]).column(0).to_pylist()))
        if self.dogs and self._parts:
            self._check_layout(row for part in self._parts for row in zip(
                *(c.to_pylist() for c in pq.read_table(part, columns=["dogs", "dog"]).columns), strict=True))
        self._pending: list[dict[str, Any]] = []
        return done

    def _check_layout(self, rows: Iterable[tuple[Any, Any]]) -> None:
        """The rows already written (their ``dogs`` and ``dog`` values) must be laid out as this run writes them:
        one row per photo, or with ``per_dog`` one per dog. The two differ only on photos with several dogs, so a
        file whose only such photo is the last one (perhaps cut off mid-photo) resumes either way."""
        if not self.per_dog:
            if any((_count(d) or 0) >= 2 for _, d in rows):
                raise BatchError(f"{self.out} was written with --per-dog (one row per dog); resume it with "
                                 "--per-dog, or use --overwrite or another --out")
            return
        rows = iter(rows)  # streamed with one row of look-ahead: an output may hold millions of rows
        ahead = next(rows, None)
        i = 0
        while ahead is not None:
            (n, d), ahead, i = ahead, next(rows, None), i + 1
            several = (_count(n) or 0) >= 2 and _starts_photo(d)
            if several and ahead is not None and _starts_photo(ahead[1]):  # the next photo follows at once
                raise BatchError(f"{self.out} was written one row per photo (without --per-dog): its row {i} lists "
                                 f"{_count(n)} dogs in one row; resume it without --per-dog, or use --overwrite or "
                                 "another --out")

    def _check_jsonl(self) -> None:
        """JSONL rows carry their answer as it was asked for: this run's must look the same (its --top-k, and its
        dogs with or without --whole-photo), or the file would mix two kinds of answer."""
        with open(self.out, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                row = _jsonl_row(self.out, i, line)
                if row.get("error") is None and "breeds" in row:
                    break
            else:
                return  # only error rows so far: nothing says how they were asked for
        have, want = len(row["breeds"]), min(self.top_k, self.n_breeds or self.top_k)
        if have != want and not (self.n_breeds is None and have < self.top_k):  # fewer breeds than asked: all
            raise BatchError(f"{self.out} was written with --top-k {have} (line {i}), not {self.top_k}; resume it "
                             "with the same --top-k, or use --overwrite or another --out")
        if ("dogs" in row) != self.dogs:
            was = "with the dogs of each photo" if "dogs" in row else "with --whole-photo (no dogs)"
            raise BatchError(f"{self.out} was written {was} (line {i}); resume it the same way, or use --overwrite "
                             "or another --out")
        for key, flag in ANSWER_KEYS.items():
            # A heat-map that failed leaves its answer without one: any answer of the file carrying it counts.
            if (key in row) != (key in self.answer_keys) and (key in row or not self._any_carries(key)):
                was = "with" if key in row else "without"
                raise BatchError(f"{self.out} was written {was} {flag} (line {i}); resume it the same way, or use "
                                 "--overwrite or another --out")

    def _any_carries(self, key: str) -> bool:
        with open(self.out, encoding="utf-8") as f:
            return any(key in _jsonl_row(self.out, i, line) for i, line in enumerate(f, 1))

    def done_paths(self) -> Iterator[str]:
        """Paths of the photos already written, in order (one per photo, also with a row per dog)."""
        return (str(v) for v in self._done_column("path"))

    def done_errors(self) -> int:
        """How many of the photos already written are error rows."""
        return sum(v == "error" for v in self._done_column("verdict"))

    def _done_column(self, name: str) -> Iterator[Any]:
        """One column's value for each photo already written when this run opened the output, in order."""
        if self.fmt == "parquet":
            yield from itertools.islice(self._parquet_column(name), self.done)
            return
        with open(self.out, newline="", encoding="utf-8") as f:
            if self.fmt == "csv":
                rows = (r for r in csv.DictReader(f) if not self.per_dog or _starts_photo(r["dog"] or None))
                yield from (row[name] for row in itertools.islice(rows, self.done))
            else:
                for i, line in enumerate(itertools.islice(f, self.done), 1):
                    yield _jsonl_row(self.out, i, line).get(name)

    def _parquet_column(self, name: str) -> Iterator[Any]:
        pq = pyarrow_parquet()
        for part in list(self._parts):
            t = pq.read_table(part, columns=[name, "dog"] if self.per_dog else [name])
            dog = t.column(1).to_pylist() if self.per_dog else itertools.repeat(None)
            yield from (v for v, d in zip(t.column(0).to_pylist(), dog, strict=False) if _starts_photo(d))

    def _repair_photos(self) -> int:
        """Per-dog CSV: check the rows are laid out one per dog (`_check_layout`), cut the rows of a last photo
        that has fewer rows than its dog count (an interrupted write) and return how many photos are complete."""
        with open(self.out, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))  # bounded by the output's size; only per-dog CSV resumes read it whole
        self._check_layout((r["dogs"] or None, r["dog"] or None) for r in rows)
        start = max((i for i, r in enumerate(rows) if _starts_photo(r["dog"] or None)), default=0)
        tail = rows[start:]
        want = max(1, _count(tail[0]["dogs"]) or 0) if tail else 0
        if tail and len(tail) < want:
            keep = len(rows) - len(tail)
            with open(self.out, "rb+") as f:
                f.readline()  # the header
                for _ in range(keep):
                    f.readline()
                f.truncate(f.tell())
            return sum(_starts_photo(r["dog"] or None) for r in rows[:keep])
        return sum(_starts_photo(r["dog"] or None) for r in rows)

    def check_resumable(self, inputs: Iterable[str], total: int) -> None:
        """The rows already written must be the first ``inputs``, in order: otherwise skipping them would be
        wrong."""
        if self.done == 0:
            return
        if self.done > total:
            def n(k: int, what: str) -> str:
                return f"{k} {what}" + ("" if k == 1 else "s")

            raise BatchError(f"{self.out} holds the answers of {n(self.done, 'photo')} but there "
                             f"{'is' if total == 1 else 'are'} {n(total, 'input')}; use --overwrite or another --out")
        for i, (want, have) in enumerate(zip(inputs, self.done_paths(), strict=False)):
            if self._stored(want) != have:
                raise BatchError(f"{self.out} row {i + 1} is {have!r}, not input {want!r}: it was written for other "
                                 "inputs; use --overwrite or another --out")

    def _stored(self, path: str) -> str:
        """An input path as this output holds it: JSONL as it is (`_jsonl_line`), CSV and Parquet as UTF-8
        (`fileio.utf8_text`), CSV on one line (`_one_line`). Every format had been compared with CSV's form, so a
        finished JSONL or Parquet output of a photo with a newline in its name could not be resumed."""
        if self.fmt == "jsonl":
            return path
        return _one_line(utf8_text(path)) if self.fmt == "csv" else utf8_text(path)

    # -- writing --------------------------------------------------------------------------------------------
    def write(self, preds: Sequence[Prediction]) -> None:
        if self.fmt == "jsonl":
            for p in preds:
                self._f.write(_jsonl_line(p.to_dict()) + "\n")
            self._f.flush()  # after every batch: an interruption loses at most the batch in flight
            return
        self.write_rows([r for p in preds for r in flat_rows(p, self.top_k, self.dogs, self.per_dog)])

    def write_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Flat rows (`flat_rows`', e.g. made by Ray actors) to CSV or Parquet, whole photos at a time."""
        if self.fmt == "parquet":
            self._pending += [{k: utf8_text(v) for k, v in r.items()} for r in rows]
            while len(self._pending) >= PART_ROWS:
                cut = next((i for i in range(PART_ROWS, len(self._pending))
                            if not self.per_dog or _starts_photo(self._pending[i]["dog"])), None)
                if cut is None:  # the last photo's rows may continue in the next call
                    break
                self._flush_part(self._pending[:cut])
                self._pending = self._pending[cut:]
            return
        if self.fmt != "csv":
            raise BatchError(f"{self.out}: flat rows go to .csv or .parquet, not .{self.fmt}")
        for row in rows:
            self._csv.writerow({k: _one_line(utf8_text(v)) for k, v in row.items()})
        self._f.flush()

    def _flush_part(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(rows, schema=parquet_schema(self.top_k, self.dogs))
        final = self.out / _part_name(len(self._parts))
        with atomic_write(final) as tmp:
            pyarrow_parquet().write_table(table, tmp)
        self._parts.append(final)

    def close(self) -> None:
        try:
            if self.fmt == "parquet":
                if self._pending:
                    self._flush_part(self._pending)
                    self._pending = []
                return
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        finally:
            self.release()

    def release(self) -> None:
        """Let another run write this output (`close` does; a run that fails before its first row calls it)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _column_difference(have: Sequence[str] | None, want: Sequence[str]) -> str:
    """What tells two headers apart, in a few words (a header of 120 breeds is 360 names)."""
    have = list(have or [])
    missing, extra = [c for c in want if c not in have], [c for c in have if c not in want]
    parts = [f"{len(have)} columns, this run writes {len(want)}"]
    for what, cols in (("without", missing), ("with", extra)):
        if cols:
            parts.append(f"{what} " + ", ".join(cols[:4]) + (f" and {len(cols) - 4} more" if len(cols) > 4 else ""))
    return "; ".join(parts)


def _starts_photo(dog: Any) -> bool:
    """A row that begins a photo: its main dog's (1), or the only row of a photo without dogs."""
    return dog is None or _count(dog) == 1


def _count(v: Any) -> int | None:
    """A ``dogs`` or ``dog`` value as read back: an int, or its text ("2"; "2.0" once a spreadsheet or pandas has
    saved the file, since a column with blanks is read as floats); blank is None."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        f = math.nan
    if not f.is_integer():
        raise BatchError(f"a dogs or dog column holds {v!r}, not a count; the file was changed since it was written: "
                         "use --overwrite or another --out")
    return int(f)


def _jsonl_row(out: Path, i: int, line: str) -> dict[str, Any]:
    """Line ``i`` of a JSONL output, which must be a prediction as this tool writes them."""
    try:
        row = json.loads(line)
    except ValueError:
        raise BatchError(f"{out} line {i} is not JSON; it was not written by this tool whole: use --overwrite or "
                         "another --out") from None
    if not isinstance(row, dict) or "path" not in row or not isinstance(row["path"], (str, type(None))):
        raise BatchError(f"{out} line {i} is not a prediction; use --overwrite or another --out")
    return row


def _part_name(i: int) -> str:
    return f"part-{i:06d}.parquet"


def _jsonl_line(d: dict[str, Any]) -> str:
    """One JSONL line: UTF-8 as it stands, or with ``\\udcNN`` escapes where a file name is not UTF-8 (valid JSON that
    reads back as the very path, so resuming matches it)."""
    line = json.dumps(d, ensure_ascii=False)
    return line if utf8_text(line) is line else json.dumps(d)


def _one_line(v: Any) -> Any:
    """Newlines inside a CSV field would make "one row per line" false, which resuming relies on."""
    return v.replace("\r", " ").replace("\n", " ") if isinstance(v, str) else v


def _repair_text(path: Path) -> int:
    """Cut a torn last line (no trailing newline, or not parseable) and return how many complete lines remain."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) != b"\n":
            end = size
            while end > 0:  # scan back block by block for the last newline: bounded memory on big outputs
                start = max(0, end - (1 << 20))
                f.seek(start)
                nl = f.read(end - start).rfind(b"\n")
                if nl >= 0:
                    break
                end = start
            f.truncate(start + nl + 1 if end > 0 else 0)
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _lock(out: Path) -> Any:
    """Hold the output for this run alone (an advisory lock on a lock file beside it, or inside a Parquet folder,
    released when the process ends however it ends): two runs appending to one file would interleave their rows,
    or overwrite each other's parts, and both would say all was written."""
    try:
        import fcntl
    except ImportError:  # not on this platform: runs are not guarded against each other
        return None
    parquet = out_format(out) == "parquet"
    if parquet and out.exists() and not out.is_dir():
        return None  # refused as it is when opened
    path = out / "_dogbreed.lock" if parquet else out.with_name(f".{out.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")  # noqa: SIM115 - held open for the run: closing it would release the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise BatchError(f"{out} is being written by another run; wait for it to finish, or give another "
                         "--out") from None
    _held.add(f)
    return f


# Locks held by this process. A forked child (a decode worker) would share each one with its parent, and keep it
# after the parent was killed: `kill -9` of a `--workers 2` run left its orphaned workers holding the output's lock
# for 5-8 s, and the resume right after was refused as "being written by another run". A child lets go of them.
_held: weakref.WeakSet = weakref.WeakSet()


def _let_go_in_child() -> None:
    for f in list(_held):
        f.close()  # the child's copy of the descriptor; the parent's lock stands
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_let_go_in_child)


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of parts whose writing was interrupted (`fileio.atomic_write`'s names, and older ``.tmp``)."""
    return list(folder.glob(".part-*.tmp.parquet")) + list(folder.glob("*.tmp"))


def _remove(path: Path) -> None:
    if settings_path(path).exists():
        settings_path(path).unlink()
    if path.is_dir():
        for part in list(path.glob("part-*.parquet")) + _leftovers(path):
            part.unlink()
        if not any(path.iterdir()):
            path.rmdir()
    elif path.exists():
        path.unlink()
