"""Atomic file writes (a crash or a kill mid-write leaves the old file or the new one, never half of either), and
reads of the JSON and safetensors files models are stored in, which fail as one clear `ModelLoadError`."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelLoadError

if TYPE_CHECKING:
    import torch

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then put back
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path`` for any writer (torch, numpy, Pillow, matplotlib, open()).

    When the block ends normally the temporary file is fsynced and renamed over ``path``; when it raises, the
    temporary file is removed and ``path`` is left as it was. The temporary name keeps ``path``'s suffix, because
    numpy, Pillow and matplotlib choose the format from it. ``durable=False`` skips the fsync: for cache entries,
    which are rebuilt when damaged, where a disk flush per entry would cost more than it saves.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name (not path + ".tmp") so two processes writing the same file cannot clobber each other's tmp.
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    # mkstemp makes the file 0600; the result should have the mode a plain open() would give it (or keep the
    # mode of the file it replaces), or outputs such as results.csv would be unreadable to the user's group.
    with contextlib.suppress(OSError):
        os.fchmod(fd, _mode_for(path))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_UMASK


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
