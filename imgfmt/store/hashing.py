"""md5 and the os_hash algorithm computed in one pass, on two threads.

hashlib releases the GIL while it digests a buffer larger than 2 KiB, so the two digests run
on both cores while the caller's thread reads and writes; the slower hash alone bounds the
speed. Each worker's queue is bounded, so memory stays at a few chunks.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import Any

#: Chunks a worker may have waiting; with 4 MiB chunks, 32 MiB held at most per hash.
QUEUE_DEPTH = 8


class _Worker(threading.Thread):
    def __init__(self, digest: Any) -> None:
        super().__init__(daemon=True)
        self.digest = digest
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)

    def run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.digest.update(chunk)


class ParallelHasher:
    """Feed chunks with ``update``; ``finish`` returns (md5 hex, os_hash hex)."""

    def __init__(self, algorithm: str = "sha512") -> None:
        try:
            os_hash = hashlib.new(algorithm)
        except ValueError:
            from ..errors import UsageError

            raise UsageError(f"hashing_algorithm {algorithm!r} is not available") from None
        self.algorithm = algorithm
        self._workers = (
            _Worker(hashlib.md5(usedforsecurity=False)),
            _Worker(os_hash),
        )
        for worker in self._workers:
            worker.start()

    def update(self, chunk: bytes) -> None:
        for worker in self._workers:
            worker.queue.put(chunk)

    def finish(self) -> tuple[str, str]:
        self.close()
        md5, os_hash = (w.digest.hexdigest() for w in self._workers)
        return md5, os_hash

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        for worker in self._workers:
            if worker.is_alive():
                worker.queue.put(None)
        for worker in self._workers:
            worker.join()
