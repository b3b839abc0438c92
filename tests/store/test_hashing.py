"""imgfmt.store.hashing: digests on threads of their own give hashlib's answers."""

from __future__ import annotations

import hashlib
import os

from imgfmt.store.hashing import BackgroundDigest, ParallelHasher


def _chunks() -> list[bytes]:
    return [os.urandom(n) for n in (0, 1, 2047, 2048, 1 << 20, 5, (4 << 20) + 3)]


def test_a_background_digest_is_hashlibs() -> None:
    chunks = _chunks()
    digest = BackgroundDigest(hashlib.md5(usedforsecurity=False))
    for chunk in chunks:
        digest.update(memoryview(chunk))
    expected = hashlib.md5(b"".join(chunks), usedforsecurity=False).hexdigest()
    assert digest.hexdigest() == expected
    digest.close()  # idempotent, and the answer stays
    assert digest.hexdigest() == expected
    assert not digest.is_alive()


def test_parallel_hasher_gives_md5_and_the_os_hash() -> None:
    chunks = _chunks()
    hasher = ParallelHasher("sha256")
    for chunk in chunks:
        hasher.update(chunk)
    data = b"".join(chunks)
    assert hasher.finish() == (
        hashlib.md5(data, usedforsecurity=False).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )
    hasher.close()
