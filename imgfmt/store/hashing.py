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


class BackgroundDigest(threading.Thread):
    """One hashlib digest fed on a thread of its own: ``update`` queues a chunk (waiting while
    ``QUEUE_DEPTH`` are queued), ``hexdigest`` waits for the queue to drain."""

    def __init__(self, digest: Any) -> None:
        super().__init__(daemon=True)
        self.digest = digest
        self.queue: queue.Queue[bytes | memoryview | None] = queue.Queue(QUEUE_DEPTH)
        self.start()

    def run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes | memoryview) -> None:
        self.queue.put(chunk)

    def hexdigest(self) -> str:
        self.close()
        return str(self.digest.hexdigest())

    def close(self) -> None:
        """Stop the thread once the queued chunks are digested (idempotent)."""
        if self.is_alive():
            self.queue.put(None)
            self.join()


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
            BackgroundDigest(hashlib.md5(usedforsecurity=False)),
            BackgroundDigest(os_hash),
        )

    def update(self, chunk: bytes) -> None:
        for worker in self._workers:
            worker.update(chunk)

    def finish(self) -> tuple[str, str]:
        md5, os_hash = (w.hexdigest() for w in self._workers)
        return md5, os_hash

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        for worker in self._workers:
            worker.close()
