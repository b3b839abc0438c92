"""Where an image's bytes come from.

Inspectors read through a ``Source``: positional reads with a known (or, for a stream not yet
drained, unknown) size. Every source counts the bytes handed out so that tests can hold
inspection to its read budget.

- ``FileSource``: a regular file or block device, read with ``os.pread``.
- ``StreamSource``: a pipe or socket. It keeps a bounded head window and a bounded tail
  window and discards the middle; a read it cannot serve raises ``UnverifiableError``.
- ``SliceSource``: a byte range of another source (a member of a tar archive).
- ``BytesSource``: bytes in memory (tests, small embedded blobs).
"""

from __future__ import annotations

import io
import os
import stat
from abc import ABC, abstractmethod
from typing import BinaryIO

from .errors import SourceError, UnverifiableError

#: How much of the start of a stream is kept for inspection.
STREAM_HEAD_WINDOW = 8 * 1024 * 1024
#: How much of the end of a stream is kept (VHD and VMDK footers live there).
STREAM_TAIL_WINDOW = 64 * 1024
_STREAM_CHUNK = 1024 * 1024


class Tally:
    """A count that several sources share."""

    def __init__(self) -> None:
        self.count = 0


class Source(ABC):
    """Random access to an image's bytes."""

    def __init__(self, name: str, parent: Source | None = None) -> None:
        self.name = name
        self.bytes_read = 0
        #: Offsets a probe wanted but a stream had not kept (see ``probe_bytes``).
        self.probe_unread: list[int] = []
        #: Bytes decompressed from this source and the sources made from it (``parent``),
        #: which share the tally: the compressed disks of one archive share one cap
        #: (``containers.compressed``).
        self.decompressed: Tally = parent.decompressed if parent else Tally()
        #: libmagic runs on this source and the sources made from it, shared the same way:
        #: past a few, a raw disk inside an archive is not named (``detect._magic``).
        self.described: Tally = parent.described if parent else Tally()

    @property
    @abstractmethod
    def size(self) -> int | None:
        """Total size in bytes, or ``None`` when it is not known."""

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the data."""
        if offset < 0 or length < 0:
            raise ValueError(f"negative read {offset}+{length}")
        size = self.size
        if size is not None:
            length = max(0, min(length, size - offset))
        if length == 0:
            return b""
        data = self._read(offset, length)
        self.bytes_read += len(data)
        return data

    @abstractmethod
    def _read(self, offset: int, length: int) -> bytes:
        """Read within bounds already clipped to the size."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release what the source holds."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(Source):
    """A file on disk (regular file or block device)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(os.fspath(path))
        try:
            # O_NONBLOCK: a FIFO without a writer is refused below instead of blocking here.
            flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.name, flags)
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot open: {exc.strerror}") from exc
        try:
            st = self.opened = os.fstat(self._fd)
            if stat.S_ISDIR(st.st_mode):
                raise SourceError(f"{self.name}: is a directory, not an image")
            if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                raise SourceError(f"{self.name}: is a pipe; read it as a stream (-)")
            if stat.S_ISREG(st.st_mode):
                self._size = st.st_size
            else:
                self._size = os.lseek(self._fd, 0, os.SEEK_END)
        except (OSError, SourceError) as exc:
            os.close(self._fd)
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{self.name}: cannot read: {exc.strerror}") from exc

    @property
    def size(self) -> int:
        return self._size

    @property
    def seekable_file(self) -> bool:
        """True for a regular file or a block device: bytes that stay put and a true size."""
        return stat.S_ISREG(self.opened.st_mode) or stat.S_ISBLK(self.opened.st_mode)

    def changed(self) -> bool:
        """True when the open file's size, mtime or ctime differ from when it was opened.

        Any write, truncation, ``utime`` or rename of the file moves its ctime, which no
        unprivileged process can set back; a change within one tick of the filesystem's clock
        after the open can go unseen.
        """
        now = os.fstat(self._fd)
        return (now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
            self.opened.st_size,
            self.opened.st_mtime_ns,
            self.opened.st_ctime_ns,
        )

    def _read(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            raise SourceError(f"{self.name}: read at {offset:#x} failed: {exc.strerror}") from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class BytesSource(Source):
    """Bytes already in memory."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        super().__init__(name)
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    def _read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]


class SliceSource(Source):
    """``length`` bytes of ``parent`` starting at ``start``, seen as a source of their own."""

    def __init__(self, parent: Source, start: int, length: int, name: str) -> None:
        super().__init__(name, parent)
        self._parent = parent
        self._start = start
        self._length = length

    @property
    def size(self) -> int:
        return self._length

    def _read(self, offset: int, length: int) -> bytes:
        return self._parent.read(self._start + offset, length)


class StreamSource(Source):
    """A stream drained once, keeping only a head window and a tail window.

    Memory held is at most ``head + tail`` bytes whatever the stream's length.
    """

    def __init__(
        self, head: bytes, tail: bytes, size: int, name: str, parent: Source | None = None
    ) -> None:
        super().__init__(name, parent)
        if len(head) + len(tail) == size:
            # The whole stream was kept: one buffer, not a join of 8 MiB for every read.
            head, tail = head + tail, b""
        self._head = head
        self._tail = tail
        self._size = size

    @classmethod
    def drain(
        cls,
        stream: BinaryIO,
        name: str = "<stdin>",
        head_window: int = STREAM_HEAD_WINDOW,
        tail_window: int = STREAM_TAIL_WINDOW,
    ) -> StreamSource:
        """Read ``stream`` to its end, keeping its first and last bytes."""
        try:
            head = _read_full(stream, head_window)
            size = len(head)
            tail = bytearray()
            while chunk := stream.read(_STREAM_CHUNK):
                size += len(chunk)
                tail += chunk
                if len(tail) > tail_window:
                    del tail[: len(tail) - tail_window]
        except OSError as exc:
            raise SourceError(f"{name}: read failed: {exc}") from exc
        return cls(head, bytes(tail), size, name)

    @property
    def size(self) -> int:
        return self._size

    @property
    def complete(self) -> bool:
        """True when head and tail together hold every byte of the stream."""
        return len(self._head) + len(self._tail) == self._size

    def _read(self, offset: int, length: int) -> bytes:
        end = offset + length
        head_len = len(self._head)
        tail_start = self._size - len(self._tail)
        if end <= head_len:
            return self._head[offset:end]
        if offset >= tail_start:
            return self._tail[offset - tail_start : end - tail_start]
        raise UnverifiableError(offset, length)


def _read_full(stream: BinaryIO, length: int) -> bytes:
    buf = bytearray()
    while len(buf) < length:
        chunk = stream.read(min(_STREAM_CHUNK, length - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def open_source(target: str | os.PathLike[str] | BinaryIO) -> Source:
    """A source for a path, ``-`` (standard input), or a binary stream."""
    if isinstance(target, str | os.PathLike):
        if os.fspath(target) == "-":
            import sys

            return StreamSource.drain(sys.stdin.buffer, "<stdin>")
        return FileSource(target)
    if isinstance(target, io.BufferedReader | io.FileIO) and _is_regular(target):
        return FileSource(target.name) if isinstance(target.name, str) else _drain(target)
    return _drain(target)


def _drain(stream: BinaryIO) -> StreamSource:
    name = getattr(stream, "name", None)
    return StreamSource.drain(stream, name if isinstance(name, str) else "<stream>")


def _is_regular(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, io.UnsupportedOperation):
        return False
