"""``imgfmt inspect`` as a user runs it: output formats, columns, exit codes, stdin."""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from imgfmt.cli.main import cli
from tests.conftest import ovf_descriptor, tar_of


def _qcow2(path: Path, size: str = "1M", *extra: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), size], check=True)
    return path


@pytest.fixture()
def safe_image(tmp_path: Path) -> Path:
    return _qcow2(tmp_path / "disk.qcow2")


@pytest.fixture()
def backed_image(tmp_path: Path) -> Path:
    base = _qcow2(tmp_path / "base.qcow2")
    return _qcow2(tmp_path / "top.qcow2", "1M", "-b", str(base), "-F", "qcow2")


def _run(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_table_for_a_safe_image(safe_image: Path) -> None:
    code, out, _ = _run("inspect", str(safe_image))
    assert code == 0
    assert "qcow2" in out
    assert "1048576" in out


def test_json_schema(safe_image: Path) -> None:
    code, out, _ = _run("inspect", "-f", "json", str(safe_image))
    assert code == 0
    [report] = json.loads(out)
    assert report["schema"] == 1
    assert report["disk_format"] == "qcow2"
    assert report["virtual_size"] == 1 << 20
    assert report["safe"] is True
    assert set(report) >= {"path", "container_format", "actual_size", "details", "findings"}


def test_value_columns(safe_image: Path) -> None:
    code, out, _ = _run(
        "inspect", "-f", "value", "-c", "disk_format", "-c", "virtual_size", str(safe_image)
    )
    assert (code, out) == (0, "qcow2 1048576\n")


def test_backing_file_is_unsafe(backed_image: Path) -> None:
    code, out, _ = _run("inspect", "-f", "json", str(backed_image))
    assert code == 1
    [report] = json.loads(out)
    assert "backing-file" in {f["code"] for f in report["findings"]}


def test_expect_format_mismatch_and_size_cap(safe_image: Path) -> None:
    code, out, _ = _run(
        "inspect",
        "-f",
        "json",
        "--expect-format",
        "raw",
        "--max-virtual-size",
        "512K",
        str(safe_image),
    )
    assert code == 1
    codes = {f["code"] for f in json.loads(out)[0]["findings"]}
    assert codes == {"format-mismatch", "virtual-size-exceeded"}


def test_stdin(safe_image: Path) -> None:
    code, out, _ = _run(
        "inspect", "-f", "value", "-c", "disk_format", "-", input=safe_image.read_bytes()
    )
    assert (code, out) == (0, "qcow2\n")


def test_missing_file_is_exit_2_and_named(tmp_path: Path, safe_image: Path) -> None:
    missing = tmp_path / "missing.img"
    code, out, err = _run(
        "inspect", "-f", "value", "-c", "disk_format", str(safe_image), str(missing)
    )
    assert code == 2
    assert str(missing) in err
    assert out == "qcow2\n"


@pytest.mark.parametrize(
    "args",
    [("-c", "nonsense"), ("--expect-format", "floppy"), ("--max-virtual-size", "lots")],
)
def test_usage_errors_exit_2(safe_image: Path, args: tuple[str, str]) -> None:
    code, _, err = _run("inspect", *args, str(safe_image))
    assert code == 2
    assert err.startswith("imgfmt: ")


def test_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    base = _qcow2(tmp_path / "b.qcow2")
    evil = tmp_path / "evil.qcow2"
    _qcow2(evil, "1M", "-b", str(base), "-F", "qcow2")
    name = str(base).encode()
    hostile = b"\x1b]0;pwned\x07\x1b[2J" + name[len(b"\x1b]0;pwned\x07\x1b[2J") :]
    data = evil.read_bytes().replace(name, hostile[: len(name)])
    evil.write_bytes(data)
    for fmt in ("table", "value", "json"):
        code, out, _ = _run("inspect", "-f", fmt, str(evil))
        assert code == 1
        assert "\x1b" not in out and "\x07" not in out


def test_a_wide_cell_folds_instead_of_widening_every_row(tmp_path: Path) -> None:
    # An OVA of 2000 files: each member row was padded to the 94 KB files cell (775 MB RSS).
    ovf = ovf_descriptor(f"d{i}" for i in range(300))
    archive = tmp_path / "many.ova"
    archive.write_bytes(tar_of([("a.ovf", ovf), *((f"d{i}", b"x" * 512) for i in range(300))]))

    code, out, _ = _run("inspect", str(archive))

    assert code == 0
    assert max(len(line) for line in out.splitlines()) < 4096
    assert len(out) < 1 << 20


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).parent / "imgfmt")], [sys.executable, "-m", "imgfmt"]],
    ids=["console-script", "python-m"],
)
def test_command_runs(command: list[str], backed_image: Path) -> None:
    proc = subprocess.run(
        [*command, "inspect", "-f", "value", "-c", "safe", str(backed_image)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (1, "false\n")


@pytest.fixture()
def many_images(tmp_path: Path, safe_image: Path, backed_image: Path) -> list[str]:
    """Thirty paths: safe and unsafe qcow2 images, raw files, and two that do not exist."""
    paths = []
    for n in range(30):
        if n % 7 == 3:
            paths.append(str(tmp_path / f"missing-{n}.img"))
        elif n % 5 == 0:
            paths.append(str(backed_image))
        elif n % 2:
            raw = tmp_path / f"raw-{n}.img"
            raw.write_bytes(bytes([n]) * 512 * (n + 1))
            paths.append(str(raw))
        else:
            paths.append(str(_qcow2(tmp_path / f"disk-{n}.qcow2", f"{n + 1}M")))
    return paths


def test_many_images_are_shared_out_over_processes_with_the_same_output(
    many_images: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one = [_run("inspect", "-f", "json", path) for path in many_images]
    forks = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        forks.append(pid)
        return pid

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    monkeypatch.setattr(os, "fork", fork)
    code, out, err = _run("inspect", "-f", "json", *many_images)
    assert len(forks) == 2  # three batches of ten: two forked, one in this process
    assert code == 2
    assert json.loads(out) == [r for _, o, _ in one_by_one if o for r in json.loads(o)]
    assert err == "".join(e for _, _, e in one_by_one)
    assert err.count("imgfmt: ") == sum(1 for p in many_images if "missing" in p)

    def refused() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    assert _run("inspect", "-f", "json", *many_images) == (code, out, err)


def test_a_forked_inspection_that_raises_is_not_lost(
    many_images: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgfmt import detect

    real_inspect = detect.inspect
    parent = os.getpid()
    started, start = os.pipe()

    def inspect(path: str, *args: object) -> object:
        if os.getpid() != parent:  # the forked process: tell the parent, then fail
            os.write(start, b".")
            raise ValueError("an inspector bug")
        # The parent waits until the child has taken an image, so that it cannot take them all.
        assert select.select([started], [], [], 60)[0]
        return real_inspect(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(detect, "inspect", inspect)
    try:
        result = CliRunner().invoke(cli, ["inspect", *many_images])
    finally:
        os.close(started)
        os.close(start)
    assert isinstance(result.exception, RuntimeError)
    assert "failed in forked process" in str(result.exception)
    assert "ValueError: an inspector bug" in str(result.exception)


def test_shares_keep_to_own_run_then_take_from_the_back_of_the_longest() -> None:
    from imgfmt.cli.inspect import _Shares

    shares = _Shares(10, 3)  # runs 0-3, 4-7, 8-9
    try:
        assert [shares._take(1) for _ in range(4)] == [4, 5, 6, 7]
        assert shares._take(1) == 3  # the back of the longest run left, worker 0's
        assert shares._take(2) == 8
        assert [shares._take(0) for _ in range(3)] == [0, 1, 2]
        assert shares._take(0) == 9
        assert shares._take(0) is None and shares._take(1) is None
    finally:
        shares.close()


def test_shares_give_each_image_to_exactly_one_process() -> None:
    from imgfmt.cli.inspect import _Shares

    count = 2000
    shares = _Shares(count, 2)
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            taken = [i for i, _ in shares.work(1, ["x"] * count, lambda _: (None, None))]
            os.write(writable, json.dumps(taken).encode())
        finally:
            os._exit(0)
    os.close(writable)
    mine = [index for index, _ in shares.work(0, ["x"] * count, lambda _: (None, None))]
    with open(readable, "rb") as pipe:
        theirs = json.loads(pipe.read())
    os.waitpid(pid, 0)
    shares.close()
    assert sorted(mine + theirs) == list(range(count))
