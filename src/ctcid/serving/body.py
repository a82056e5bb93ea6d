"""A request body as it arrived, kept while the guard checks it, then handed on piece by piece.

The chunks the server received are kept as they are (no copy) up to ``memory_bytes``; a larger
body moves to an unnamed temporary file, so a few large uploads at once cannot fill the memory.
Handing it on, a span of bytes can be replaced (:meth:`Body.pieces`): the guard re-encodes text
values that BentoML would otherwise read as numbers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

MEMORY_BYTES = 4 * 2**20
FILE_PIECE = 2**20  # read back from the file in pieces of this size

Rewrite = tuple[int, int, bytes]  # (start, end, new bytes): body[start:end] is replaced


class Body:
    def __init__(self, memory_bytes: int = MEMORY_BYTES) -> None:
        self.memory_bytes = memory_bytes
        self.chunks: list[bytes] = []
        self.size = 0
        self.file: IO[bytes] | None = None

    def write(self, chunk: bytes) -> None:
        if self.file is None and self.size + len(chunk) > self.memory_bytes:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            for kept in self.chunks:
                self.file.write(kept)
            self.chunks = []
        if self.file is not None:
            self.file.write(chunk)
        else:
            self.chunks.append(chunk)
        self.size += len(chunk)

    def pieces(self, rewrites: Sequence[Rewrite] = ()) -> Iterator[bytes]:
        """The body in order, each rewrite's span replaced by its bytes."""
        at = 0
        for start, end, new in sorted(rewrites):
            yield from self._range(at, start)
            yield new
            at = end
        yield from self._range(at, self.size)

    def _range(self, start: int, end: int) -> Iterator[bytes]:
        if self.file is not None:
            self.file.seek(start)
            left = end - start
            while left > 0:
                piece = self.file.read(min(FILE_PIECE, left))
                if not piece:
                    return
                left -= len(piece)
                yield piece
            return
        offset = 0
        for chunk in self.chunks:
            low, high = max(start - offset, 0), min(end - offset, len(chunk))
            if low < high:
                yield chunk if (low, high) == (0, len(chunk)) else chunk[low:high]
            offset += len(chunk)
            if offset >= end:
                return

    def close(self) -> None:
        self.chunks = []
        if self.file is not None:
            self.file.close()

    def __enter__(self) -> Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
