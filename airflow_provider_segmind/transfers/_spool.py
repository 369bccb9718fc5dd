"""The spool a download streams into: bounded memory, then an anonymous temporary file.

Written once by the download, then read back by position, concurrently, by the multipart upload
(:class:`SpoolSlice` is one part's body), so memory stays bounded whatever an output's size.

Why not ``tempfile.SpooledTemporaryFile``: the multipart upload reads parts concurrently, by
position (``os.pread``, no shared file position). A ``SpooledTemporaryFile`` has one position for
all readers, its in-memory buffer is reachable only through the private ``_file``, and its
``fileno()`` forces the rollover to disk; concurrent part reads would need a lock around
seek-and-read (serialising the parts) or those private attributes, and the module would not shrink.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

from airflow_provider_segmind.utils.media_policy import DEFAULT_SPOOL_MEMORY


class Spool:
    """Bytes written once, then read back by position (parts may be read concurrently).

    Up to ``memory_limit`` bytes stay in memory; beyond, everything moves to an unnamed temporary
    file (deleted when closed, or by the OS if the process dies), so memory stays bounded.
    """

    def __init__(self, memory_limit: int = DEFAULT_SPOOL_MEMORY, tmp_dir: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.tmp_dir = tmp_dir
        self._buffer: bytearray | None = bytearray()
        self._file: Any = None
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._buffer is not None and self.size + len(data) > self.memory_limit:
            self._file = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 - closed by close()
            self._file.write(self._buffer)
            self._buffer = None
        if self._buffer is not None:
            self._buffer += data
        else:
            self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        """Flush pending writes; call before reading."""
        if self._file is not None:
            self._file.flush()

    @property
    def in_memory(self) -> bool:
        return self._buffer is not None

    def read_range(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (thread-safe: positional reads, no shared file position)."""
        if self._buffer is not None:
            return bytes(self._buffer[offset : offset + length])
        chunks: list[bytes] = []
        fd = self._file.fileno()
        while length > 0:
            chunk = os.pread(fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def head(self, length: int = 64) -> bytes:
        return self.read_range(0, min(length, self.size))

    def getvalue(self) -> bytes:
        return self.read_range(0, self.size)

    def open_range(self, offset: int, length: int) -> SpoolSlice:
        return SpoolSlice(self, offset, length)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffer = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpoolSlice(io.RawIOBase):
    """A read-only, seekable window on a spool: an upload part's body that is read lazily.

    It has a length but no ``fileno`` (botocore would size it from the whole file).
    """

    def __init__(self, spool: Spool, offset: int, length: int) -> None:
        super().__init__()
        self._spool = spool
        self._start = offset
        self._length = length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._length - self._pos
        if size is None or size < 0 or size > remaining:
            size = remaining
        if size <= 0:
            return b""
        data = self._spool.read_range(self._start + self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
