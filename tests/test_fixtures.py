"""Every fixture through the whole engine: detection, oracle, findings, streams, read budget."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

import imgfmt
from imgfmt.report import Severity
from imgfmt.source import FileSource, StreamSource
from tests.conftest import fixture_entries, fixture_ids

ENTRIES = fixture_entries()
IDS = fixture_ids(ENTRIES)

#: Bytes inspection may read from one image, probes included, whatever its size.
READ_BUDGET = 2 * 1024 * 1024
#: Streams are replayed only for files up to this apparent size: a sparse giant (1 TiB qcow2,
#: 100 GiB raw) would be read to its end, zeros and all. test_source bounds a giant stream.
STREAM_LIMIT = 256 * 1024 * 1024
STREAMED = tuple(e for e in ENTRIES if os.path.getsize(e["path"]) <= STREAM_LIMIT)


class _Pipe(io.RawIOBase):
    """A file seen as a pipe: no seek, no fileno, reads in odd sizes."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._f.read(min(len(buf), 65521))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_detection_matches_oracle(entry: dict[str, Any]) -> None:
    report = imgfmt.inspect(entry["path"], policy=imgfmt.Policy(disk_formats=_all_formats()))

    assert report.disk_format == entry["format"], report.to_dict()
    assert report.container_format == entry.get("container_format", "bare"), report.to_dict()
    if entry["oracle"] is not None:
        assert report.virtual_size == entry["oracle"]["virtual-size"], report.to_dict()
    elif entry["virtual_size"] is not None:
        assert report.virtual_size == entry["virtual_size"]
    assert set(entry["codes"]) <= report.codes(), report.to_dict()
    assert report.safe == entry["safe"], report.to_dict()
    for key, value in entry["details"].items():
        assert report.details.get(key) == value, (key, report.details)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_reads_stay_within_budget(entry: dict[str, Any]) -> None:
    with FileSource(entry["path"]) as source:
        imgfmt.inspect(source)
        assert source.bytes_read <= READ_BUDGET


@pytest.mark.parametrize("entry", STREAMED, ids=fixture_ids(STREAMED))
def test_stream_gives_same_verdict(entry: dict[str, Any]) -> None:
    policy = imgfmt.Policy(disk_formats=_all_formats())
    from_file = imgfmt.inspect(entry["path"], policy=policy)
    with io.BufferedReader(_Pipe(entry["path"])) as pipe:
        from_stream = imgfmt.inspect(StreamSource.drain(pipe), policy=policy)

    if "stream-unverifiable" in from_stream.codes():
        # Some bytes passed by unseen: the report must say so and must not name another format.
        assert from_stream.disk_format == from_file.disk_format or not from_stream.safe
        return
    assert from_stream.disk_format == from_file.disk_format
    assert from_stream.virtual_size == from_file.virtual_size
    assert from_stream.codes() == from_file.codes()
    assert from_stream.safe == from_file.safe


def test_every_unsafe_fixture_says_why() -> None:
    for entry in ENTRIES:
        if entry["safe"]:
            continue
        report = imgfmt.inspect(entry["path"])
        unsafe = [f for f in report.findings if f.severity is Severity.UNSAFE]
        assert unsafe, entry["name"]
        for finding in unsafe:
            assert len(finding.message) > 20, finding


def _all_formats() -> frozenset[str]:
    from imgfmt.policy import KNOWN_DISK_FORMATS

    return KNOWN_DISK_FORMATS
