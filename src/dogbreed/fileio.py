"""Atomic file writes (a crash or a kill mid-write leaves the old file or the new one, never half of either), the one
place a failed write becomes a `WriteError` (disk full, quota, read-only, permission: one sentence naming the file),
and reads of the JSON and safetensors files models are stored in, which fail as one clear `ModelLoadError`."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelLoadError, WriteError

if TYPE_CHECKING:
    import torch

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then put back
os.umask(_UMASK)


def _temp_beside(path: Path) -> Path:
    """A new, empty temporary file in ``path``'s folder (made if needed), named after it, with its mode."""
    with writing(path, missing=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique name (not path + ".tmp") so two processes writing the same file cannot clobber each other's tmp.
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    # mkstemp makes the file 0600; the result should have the mode a plain open() would give it (or keep the
    # mode of the file it replaces), or outputs such as results.csv would be unreadable to the user's group.
    with contextlib.suppress(OSError):
        os.fchmod(fd, _mode_for(path))
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_write(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path`` for any writer (torch, numpy, Pillow, matplotlib, open()).

    When the block ends normally the temporary file is fsynced and renamed over ``path``; when it raises, the
    temporary file is removed and ``path`` is left as it was. The temporary name keeps ``path``'s suffix, because
    numpy, Pillow and matplotlib choose the format from it. ``durable=False`` skips the fsync: for cache entries,
    which are rebuilt when damaged, where a disk flush per entry would cost more than it saves.
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with writing(path):
            yield tmp
            if durable:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# errno -> the cause in words, for the failures a write meets that a user can act on.
WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "the file is too large for this file system",
    errno.EIO: "an I/O error (the disk or the network file system failed)",
    # the output's own name is a folder (`export --out dir.onnx --overwrite` had ended in a traceback)
    errno.EISDIR: "a folder stands where the file would be",
}
# Writers that are not Python's own (pyarrow, safetensors, torch) raise their own types; their messages still say
# "[Errno 28]", "errno 28" or "os error 28".
_ERRNO_IN_TEXT = re.compile(r"(?:errno|os error|code:)\s*(\d+)", re.IGNORECASE)


# Where only the output itself is touched (its folder made, the file opened), a missing path is the output's: a
# folder that cannot hold new files (/proc/x.csv) or was removed meanwhile. Elsewhere it may be an input's.
NO_PLACE = {errno.ENOENT: "no such file or directory: nothing can be made there",
            errno.ENOTDIR: "a part of the path is not a folder",
            errno.EEXIST: "a file stands where its folder would be"}


def write_error(path: str | Path, e: BaseException, hint: str = "", missing: bool = False) -> WriteError | None:
    """The `WriteError` for ``e`` raised while writing ``path``; None when ``e`` is not a failed write.
    ``missing``: a missing path (`NO_PLACE`) is a failed write too."""
    if isinstance(e, WriteError):  # made deeper down (atomic_write), naming the file itself; add the hint
        return WriteError(e.path, e.reason, e.errno, hint) if hint and not e.hint else e
    code = e.errno if isinstance(e, OSError) else None
    if code is None and (isinstance(e, (OSError, RuntimeError, ValueError)) or type(e).__name__ == "SafetensorError"):
        m = _ERRNO_IN_TEXT.search(str(e))
        code = int(m.group(1)) if m else None
    reasons = {**WRITE_FAILURES, **NO_PLACE} if missing else WRITE_FAILURES
    if code not in reasons:
        return None
    return WriteError(str(path), reasons[code], code, hint)


@contextlib.contextmanager
def writing(path: str | Path, hint: str = "", missing: bool = False) -> Iterator[None]:
    """Inside this block, a failed write (`WRITE_FAILURES`) is raised as a `WriteError` naming ``path``; other
    exceptions pass unchanged. ``hint`` is added to the sentence (e.g. how to resume). ``missing``: the block
    touches only the output, so a missing path is its failure too (`NO_PLACE`)."""
    try:
        yield
    except Exception as e:
        err = write_error(path, e, hint, missing)
        if err is None or err is e:
            raise
        raise err from e


def out_folder(path: str | Path) -> Path:
    """Check, before a command's slow work, that ``path`` can be made an output folder: not empty, no file on its
    way, and the nearest folder that exists writable. Nothing is made (a command that then fails leaves nothing);
    `adapt` used to extract every photo's features, then fail in a traceback from ``mkdir``."""
    if not str(path).strip():
        raise WriteError(repr(str(path)), "no output folder given")
    out = Path(path)
    for p in (out, *out.absolute().parents):
        if p.is_symlink() and not p.exists():
            raise WriteError(str(out), f"{p} is a broken symbolic link")
        if p.exists():
            if not p.is_dir():
                raise WriteError(str(out), f"{p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise WriteError(str(out), f"permission denied ({p} is not writable)", errno.EACCES)
            break
    return out


_log = logging.getLogger("dogbreed")
_said: set[str] = set()


def say_once(message: str, key: str | None = None) -> None:
    """One line on stderr (a `logging` warning of the "dogbreed" logger), once per process and ``key``: how a cache
    that heals itself or goes without writing tells the user, without a traceback and without repeating."""
    key = key or message
    if key in _said:
        return
    _said.add(key)
    _log.warning("dogbreed: %s", message)


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_UMASK


def atomic_write_pair(first: tuple[str | Path, bytes], second: tuple[str | Path, bytes]) -> None:
    """Two files that only work together (weights and the JSON that reads them) replaced as nearly at once as a
    file system allows: both are written in full first, then renamed one after the other, and when the second
    rename fails (a read-only or immutable file, a full quota) the first file is put back as it was. Written one
    after the other, a failure between them left new weights beside the old JSON, and the model that had worked
    no longer loaded."""
    (p1, d1), (p2, d2) = (Path(first[0]), first[1]), (Path(second[0]), second[1])
    temps: list[Path] = []
    old = p1.with_name(f".{p1.name}.old")
    try:
        for p, data in ((p1, d1), (p2, d2)):
            temps.append(_temp_beside(p))
            with writing(p), open(temps[-1], "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        had_old = p1.exists()
        if had_old:  # a second name for the old file, so that p1 is there at every moment, old or new
            old.unlink(missing_ok=True)
            with writing(p1):
                try:
                    os.link(p1, old)
                except OSError:  # a file system without hard links
                    shutil.copy2(p1, old)
        try:
            with writing(p1):
                os.replace(temps[0], p1)
            with writing(p2):
                os.replace(temps[1], p2)
        except BaseException:
            if had_old:
                os.replace(old, p1)
            else:  # new weights beside an old (or no) JSON would not load either
                p1.unlink(missing_ok=True)
            raise
        old.unlink(missing_ok=True)
    finally:
        for t in temps:
            t.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see `atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see `atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def path_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a photo, in a few words; None when it is a readable, non-empty regular file.

    Checked with stat before anything opens the path: opening a named pipe would block, and Python's own messages
    ("[Errno 36] File name too long") are not what a user needs to see.
    """
    if not str(path).strip():  # a manifest's blank cell: "file not found: " named nothing to look for
        return f"no path given ({path!r}: a blank cell in a manifest's path column?)"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        return f"file not found: {path}"
    except OSError as e:
        reason = {errno.ELOOP: "symbolic link loop", errno.ENAMETOOLONG: "file name too long",
                  errno.EACCES: "permission denied", errno.ENOTDIR: "a part of the path is not a folder"}
        return reason.get(e.errno or 0, f"cannot read the file ({e.strerror or e})")
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path):
                pass
        except OSError as e:  # a folder met on a walk that could not list it (`sources.UnlistedFolder`)
            why = "permission denied" if e.errno == errno.EACCES else (e.strerror or str(e))
            return f"a folder that cannot be listed ({why}): its photos are left out"
        return f"{path} is a directory"
    kind = None
    if stat.S_ISFIFO(st.st_mode):
        kind = "a named pipe (FIFO)"
    elif stat.S_ISSOCK(st.st_mode):
        kind = "a socket"
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "a device"
    if kind:
        return f"not a regular file: {kind}"
    if not os.access(path, os.R_OK):
        return "permission denied"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def read_json(path: str | Path, what: str = "file") -> dict[str, Any]:
    """A JSON object from ``path``; anything else (missing, unreadable, not JSON, not an object) is a
    `ModelLoadError` naming the file and ``what`` it should have been."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not a readable {what} ({e})") from None
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: not a {what} (a JSON object is expected)")
    return obj


def read_safetensors(path: str | Path, *, as_numpy: bool = False) -> dict[str, torch.Tensor] | dict[str, np.ndarray]:
    """The tensors of a safetensors file (numpy arrays with ``as_numpy``, for callers that must not load torch); a
    missing, empty or truncated one is a `ModelLoadError` naming it."""
    if as_numpy:
        from safetensors.numpy import load
    else:
        from safetensors.torch import load
    try:
        return load(Path(path).read_bytes())
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error type for a truncated or empty file
        raise ModelLoadError(f"{path}: not a readable safetensors file, perhaps truncated ({e})") from None


def utf8_text(v: Any) -> Any:
    """Text that UTF-8 can hold: a file name that is not UTF-8 (Python gives its bytes as lone surrogates) with those
    bytes as ``\\xNN``, as `ls -b` shows them; anything else as it is. One such photo had ended a CSV, JSONL or
    Parquet run in a traceback (UnicodeEncodeError), on every resume too, and its `--explain` heat-map."""
    if not isinstance(v, str):
        return v
    try:
        v.encode("utf-8")
        return v
    except UnicodeEncodeError:
        try:
            return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
            return v.encode("utf-8", "backslashreplace").decode("utf-8")
