"""Errors that name what is wrong and where: the file, the sequence or frame, and the field."""

from __future__ import annotations


class CatposeError(Exception):
    """Base class of catpose's own errors.

    They survive pickling (a Ray task's or Ray Train worker's error reaches the driver as itself): the
    subclasses' constructors take other arguments than the finished message, which the default
    ``BaseException`` pickling would pass back to them, so :meth:`__reduce__` rebuilds an error from its
    message and attributes instead."""

    def __reduce__(self):
        return _rebuild, (type(self), str(self), dict(self.__dict__))


class DataFormatError(CatposeError, ValueError):
    """A file exists but its content is not what the format requires.

    ``path`` is the file, ``field`` the dotted field inside it (``frame_annotations[12].viewpoint.R``)
    when the problem is a field; both appear in the message.
    """

    def __init__(self, path: str, message: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        where = f"{self.path}: field '{field}'" if field else self.path
        super().__init__(f"{where}: {message}")


class MissingFileError(CatposeError, FileNotFoundError):
    """A file that the data layout requires does not exist."""

    def __init__(self, path: str, what: str = "file"):
        self.path = str(path)
        super().__init__(f"{what} not found: {self.path}")


class SfMError(CatposeError, RuntimeError):
    """Structure-from-Motion failed for a sequence."""

    def __init__(self, sequence: str, message: str):
        self.sequence = sequence
        super().__init__(f"SfM failed for sequence '{sequence}': {message}")


class StorageError(CatposeError, OSError):
    """A store (local folder or s3:// bucket) cannot be reached or written."""

    def __init__(self, uri: str, message: str):
        self.uri = uri
        super().__init__(f"{uri}: {message}")


class AlignmentError(CatposeError, ValueError):
    """A category cannot be aligned: too few usable videos, or no pair could be aligned."""

    def __init__(self, category: str, message: str):
        self.category = category
        super().__init__(f"category '{category}' {message}")


class ConfigError(DataFormatError):
    """A configuration (YAML file or flags) has an unknown field, a value of the wrong type, or values
    that do not fit together; the message names the file (or the flag) and the field."""


class NoObjectError(CatposeError, ValueError):
    """The image (or its box/mask) shows no object of the category."""

    def __init__(self, source: str, message: str):
        self.path = source
        super().__init__(f"{source}: {message}")


class CleaningError(DataFormatError):
    """Cleaning a video's point cloud (ground, background, outliers removed) left too little of it:
    the video is skipped, with this reason in its manifest entry."""


def _rebuild(cls: type, message: str, state: dict) -> CatposeError:
    """The error of class ``cls`` with ``message`` and attributes ``state`` (see
    :meth:`CatposeError.__reduce__`)."""
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    e.__dict__.update(state)
    return e


def report_error(e: BaseException, prog: str = "catpose") -> int:
    """One line on stderr for an error that ends a command; returns the exit code 2."""
    import sys

    if isinstance(e, CatposeError):
        msg = str(e)
    else:  # not one of catpose's own errors: name its type, and say how to see more
        msg = f"{type(e).__name__}: {e} (run with --debug for the traceback)"
    print(f"{prog}: error: {' '.join(msg.split())}", file=sys.stderr)
    return 2
