"""Exceptions raised by cloudrec.

Every error about bad data names the file (URL) and, where it applies, the
record key or byte offset, so a user can find the broken record.
"""
from __future__ import annotations

from typing import Optional


class CloudrecError(Exception):
    """Base class of every error cloudrec raises on purpose.

    Secrets never reach a message: string arguments (and the ``url``
    attribute a subclass set) pass through :func:`cloudrec.storage.redact.redact_text`,
    which masks URL passwords, signing query values and quoted secret options.
    """

    def __init__(self, *args: object) -> None:
        from cloudrec.storage.redact import redact_text, redact_url  # no import cycle at load
        url = getattr(self, "url", None)
        if isinstance(url, str):
            self.url = redact_url(url)
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


def _where(url: Optional[str], offset: Optional[int] = None, key: object = None) -> str:
    parts = []
    if url is not None:
        parts.append(str(url))
    if key is not None:
        if type(key).__module__ == "numpy" and hasattr(key, "item"):  # not np.int64(21)
            key = key.item()
        parts.append(f"key {key!r}")
    if offset is not None:
        parts.append(f"offset {offset}")
    return ", ".join(parts)


class RecordIOError(CloudrecError, ValueError):
    """A `.rec` file is malformed: bad magic, bad cflag sequence, truncation."""

    def __init__(self, message: str, url: Optional[str] = None,
                 offset: Optional[int] = None, key: object = None) -> None:
        self.url, self.offset, self.key = url, offset, key
        self.message = message  # without the location, for wrappers that add their own
        where = _where(url, offset, key)
        super().__init__(f"{message} ({where})" if where else message)


class RecordTooLargeError(RecordIOError):
    """A record of 2**29 bytes or more cannot be framed (dmlc's limit)."""


class IndexFileError(CloudrecError, ValueError):
    """A `.idx` file is missing, unparsable or points outside its `.rec`."""

    def __init__(self, message: str, url: Optional[str] = None,
                 line: Optional[int] = None, key: object = None,
                 offset: Optional[int] = None) -> None:
        self.url, self.line, self.key, self.offset = url, line, key, offset
        self.message = message  # without the location, for wrappers that add their own
        parts = [_where(url, offset, key)]
        if line is not None:
            parts.append(f"line {line}")
        where = ", ".join(p for p in parts if p)
        super().__init__(f"{message} ({where})" if where else message)


class ImageListError(CloudrecError, ValueError):
    """A `.lst` line cannot be parsed or has the wrong label width."""

    def __init__(self, message: str, url: Optional[str] = None, line: Optional[int] = None) -> None:
        self.url, self.line = url, line
        where = ", ".join(p for p in (str(url) if url else "", f"line {line}" if line else "") if p)
        super().__init__(f"{message} ({where})" if where else message)


class HeaderError(CloudrecError, ValueError):
    """An image record payload is too short for its IRHeader or packed labels."""


class StorageError(CloudrecError, OSError):
    """A read or write against a URL failed for good (after retries)."""

    def __init__(self, message: str, url: Optional[str] = None,
                 start: Optional[int] = None, end: Optional[int] = None) -> None:
        self.url, self.start, self.end = url, start, end
        where = str(url) if url else ""
        if start is not None:
            where += f" bytes [{start}, {end})"
        super().__init__(f"{message} ({where})" if where else message)


class ChecksumMismatchError(StorageError):
    """The bytes received for a whole object differ from the checksum the store keeps for it."""


class ImageDecodeError(CloudrecError, ValueError):
    """An image payload could not be decoded (broken, truncated or not an image)."""

    def __init__(self, message: str, url: Optional[str] = None, key: object = None) -> None:
        self.url, self.key = url, key
        where = _where(url, None, key)
        super().__init__(f"{message} ({where})" if where else message)


class ImageTooLargeError(ImageDecodeError):
    """An image header claims more pixels than the decompression-bomb limit."""


class LabelError(CloudrecError, ValueError):
    """A record's label disagrees with label_width or the detection layout."""


class ConfigError(CloudrecError, ValueError):
    """A configuration key or value is unknown or invalid."""
