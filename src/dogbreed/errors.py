"""Typed errors: front ends map these types (never message wording) to exit codes and HTTP status codes.

Each message is one sentence a user can act on. Every class is also a ``ValueError`` (or ``FileNotFoundError``
where that is what happened), so callers that caught the built-in types before keep working.
"""

from __future__ import annotations


class DogbreedError(Exception):
    """Base of every error this package raises on purpose (bad input, bad file, bad setting)."""


class ImageDecodeError(DogbreedError, ValueError):
    """A file or bytes that should hold a photo cannot be used as one; the subclass says why."""


class EmptyImage(ImageDecodeError):
    """The file or upload has no bytes, or the path is a folder."""


class UnreadableImage(ImageDecodeError):
    """The bytes start like an image but are corrupt or truncated."""


class UnsupportedImage(ImageDecodeError):
    """The bytes are not an image, or in a format Pillow cannot decode."""


class ImageTooLarge(ImageDecodeError):
    """The photo has more pixels than the configured limit (a decompression-bomb guard)."""


def too_many_pixels(pixels: int | None, limit: int, size: tuple[int, int] | None = None, whose: str = "",
                    decoded: tuple[int, int] | None = None) -> str:
    """The one sentence for a photo over a pixel limit, with thousands marked ("image too large: 9000x6000 is
    54,000,000 pixels; the limit is 50,000,000"): "400000000 pixels exceeds 50000000" was hard to read.
    ``decoded``: the size a JPEG's draft decodes ``size`` at, which the limit is on; ``pixels`` None: not known."""
    if pixels is None:
        what = "too many pixels"
    elif size and decoded:
        what = f"{size[0]}x{size[1]} decodes at {decoded[0]}x{decoded[1]}, {pixels:,} pixels"
    else:
        what = f"{size[0]}x{size[1]} is {pixels:,} pixels" if size else f"{pixels:,} pixels"
    return f"image too large: {what}; {whose or 'the'} limit is {limit:,}"


class ImageNotFound(ImageDecodeError, FileNotFoundError):
    """The path names no file."""


class ModelLoadError(DogbreedError, ValueError):
    """A model spec, model dir, run dir, checkpoint, .onnx file or detector file cannot be loaded."""


class ConfigError(DogbreedError, ValueError):
    """A training preset or a ``--set`` value is unknown, of the wrong type or out of range."""


class DataError(DogbreedError, ValueError):
    """A data set is missing, empty or cannot be trained on (e.g. fewer than two breeds)."""


class DataNotFound(DataError, FileNotFoundError):
    """The data set folder or file does not exist."""


class BatchError(DogbreedError, ValueError):
    """A batch run's inputs or output cannot be used (a manifest without its column, an output that belongs to other
    inputs or another top-k, a bad suffix...)."""


class WriteError(DogbreedError, OSError):
    """An output or cache file cannot be written: the disk or the quota is full, the file system is read-only,
    permission was taken away, an I/O error. ``path`` names the file and ``reason`` the cause in words; made in one
    place (`fileio.write_error`) from the OSError the write raised, whose ``errno`` it keeps."""

    def __init__(self, path: str, reason: str, errno_: int | None = None, hint: str = "") -> None:
        super().__init__(f"cannot write {path}: {reason}" + (f"; {hint}" if hint else ""))
        self.path, self.reason, self.hint = path, reason, hint
        self.errno = errno_

    def __str__(self) -> str:  # OSError's own __str__ would print "[Errno ...]" forms of the arguments
        return str(self.args[0])
