"""The one place that runs qemu-img.

References: qemu-img(1) of qemu 7.2 (``info``, ``convert``, ``compare``, ``--image-opts``),
qemu's ``block.c`` (``path_has_protocol`` and the ``json:`` pseudo-protocol, which make a bare
file name such as ``nbd:...`` or ``json:{...}`` open something other than a file) and
``qemu-img.c`` (the ``(NN.NN/100%)`` progress records that ``-p`` writes to stdout).

Every call is an argument list, never a shell. The image to read is always named by
``--image-opts`` with ``driver=`` set from imgfmt's own inspection (that is the ``-f``; qemu
refuses ``-f`` next to ``--image-opts``) and ``file.driver=file`` (or ``host_device``) with an
absolute ``file.filename``, so no name can become an option, a protocol or a JSON spec. The one
name qemu-img creates, the conversion's output, is an absolute path imgfmt chose itself.
Standard input is closed, and qemu-img runs under address-space and CPU-time limits.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

from .config import Config, ConfigError
from .errors import ImgfmtError, UsageError
from .log import Logger
from .policy import parse_size

log = Logger(__name__)

QEMU_IMG = "qemu-img"

#: Glance disk format -> qemu block driver, for every format qemu-img 7.2 reads without a key.
DRIVERS: Mapping[str, str] = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
    "qed": "qed",
    "ploop": "parallels",
    "iso": "raw",
    "aki": "raw",
    "ari": "raw",
    "ami": "raw",
}

#: glibc reserves 64 MiB of address space per malloc arena, up to 8 per CPU; qemu-img's
#: thread pool would make its address space grow with the machine's CPU count. Measured on
#: 2 CPUs, qemu-img 7.2 ``convert -m 16 -W`` of 256 MiB peaked at 1.2 GiB, and at 274 MiB
#: with two arenas.
MALLOC_ARENAS = "2"
#: Most of qemu-img's stderr that an error message quotes.
STDERR_CAP = 64 * 1024
#: Most of qemu-img's stdout kept (``info --output=json`` of a many-extent vmdk).
STDOUT_CAP = 16 * 1024 * 1024
SECTOR = 512
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


class Limits(NamedTuple):
    """Resource limits for one qemu-img process (``setrlimit`` RLIMIT_AS and RLIMIT_CPU).

    The defaults let a multi-hundred-GiB image convert: with ``MALLOC_ARENAS`` qemu-img 7.2
    stayed under 300 MiB of address space in every conversion measured, and the slowest
    target, vmdk streamOptimized (compressed), took 20 to 30 CPU seconds per GiB of mixed
    data, so four hours of CPU time cover about 500 GiB.
    """

    address_space: int = 4 << 30
    cpu_seconds: int = 4 * 3600

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        """``[qemu_img] address_space`` (a size) and ``cpu_time`` (seconds), else defaults."""
        section = "qemu_img"
        limits = cls()
        space = config.get(section, "address_space")
        cpu = config.get(section, "cpu_time")
        try:
            address_space = parse_size(space) if space else limits.address_space
        except UsageError as exc:
            raise ConfigError(config.path, section, "address_space", str(exc)) from exc
        if cpu is not None and not cpu.isdigit():
            raise ConfigError(config.path, section, "cpu_time", f"{cpu!r} is not seconds")
        return cls(address_space, int(cpu) if cpu else limits.cpu_seconds)


#: ``qemu-img info`` reads headers only; Glance holds it to 1 GiB and a few CPU seconds too.
INFO_LIMITS = Limits(address_space=1 << 30, cpu_seconds=30)


class QemuError(ImgfmtError):
    """qemu-img failed; the message is qemu's own, with what was run."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        command = argv[1] if len(argv) > 1 else "?"
        reason = _describe_exit(returncode)
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
        super().__init__(f"qemu-img {command} {reason}: {detail}")


def _describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"failed (exit {returncode})"
    signum = -returncode
    if signum == signal.SIGXCPU:
        return "ran out of its CPU-time limit ([qemu_img] cpu_time)"
    if signum in (signal.SIGABRT, signal.SIGSEGV):
        return "aborted, possibly at its address-space limit ([qemu_img] address_space)"
    return f"was killed by {signal.Signals(signum).name}"


class ImageRef(NamedTuple):
    """An image as qemu-img opens it: a file, or ``length`` bytes of it from ``offset``."""

    path: str
    disk_format: str
    offset: int = 0
    length: int | None = None

    @classmethod
    def of(
        cls,
        path: str | os.PathLike[str],
        disk_format: str,
        offset: int = 0,
        length: int | None = None,
    ) -> ImageRef:
        """A reference with an absolute path and a format qemu-img can read.

        qemu's raw driver takes a byte range only in whole 512-byte sectors: a ``length`` that
        is not one is a usage error (``imgfmt.convert`` inspects the range in sectors first).
        """
        if disk_format not in DRIVERS:
            known = ", ".join(sorted(DRIVERS))
            raise UsageError(f"qemu-img cannot read disk format {disk_format} (it reads {known})")
        path = os.path.abspath(path)
        if length is not None and length % SECTOR:
            raise UsageError(
                f"{path}: qemu-img reads byte ranges in whole 512-byte sectors, not {length} bytes"
            )
        return cls(path, disk_format, offset, length)

    def image_opts(self) -> str:
        """The ``--image-opts`` string: format driver over a file (or a byte range of one)."""
        driver, protocol = DRIVERS[self.disk_format], _protocol(self.path)
        filename = self.path.replace(",", ",,")
        if self.offset == 0 and self.length is None:
            return f"driver={driver},file.driver={protocol},file.filename={filename}"
        size = f",file.size={self.length}" if self.length is not None else ""
        return (
            f"driver={driver},file.driver=raw,file.offset={self.offset}{size},"
            f"file.file.driver={protocol},file.file.filename={filename}"
        )


def _protocol(path: str) -> str:
    try:
        block = stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        block = False
    return "host_device" if block else "file"


def info(image: ImageRef, limits: Limits = INFO_LIMITS) -> dict[str, Any]:
    """``qemu-img info --output=json`` of an image, parsed."""
    import json

    argv = [QEMU_IMG, "info", "--output=json", "--image-opts", image.image_opts()]
    out = run(argv, limits)
    try:
        parsed = json.loads(out)
    except ValueError as exc:
        raise QemuError(argv, 0, f"output is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise QemuError(argv, 0, "output is not a JSON object")
    return parsed


def compare(first: ImageRef, second: ImageRef, limits: Limits) -> str | None:
    """``None`` when the guest sees the same bytes in both, else qemu-img's difference."""
    argv = [QEMU_IMG, "compare", "--image-opts", first.image_opts(), second.image_opts()]
    returncode, out, errors = _execute(argv, limits, None)
    # qemu-img compare: 0 identical, 1 different, 2 and up an error (qemu-img(1)).
    if returncode == 1:
        return out.decode("utf-8", "replace").strip() or errors.strip() or "images differ"
    if returncode != 0:
        raise QemuError(argv, returncode, errors)
    return None


class ConvertArgs(NamedTuple):
    """What ``qemu-img convert`` is asked to write; ``options`` are already validated."""

    target_format: str
    options: Mapping[str, str]
    compress: bool = False
    sparse_size: int | None = None
    out_of_order: bool = False
    coroutines: int | None = None


def convert_argv(source: ImageRef, target: str, args: ConvertArgs, progress: bool) -> list[str]:
    """The argument list converting ``source`` into the new file ``target``."""
    argv = [QEMU_IMG, "convert", *(["-p"] if progress else []), "--image-opts"]
    argv += [source.image_opts(), "-O", DRIVERS[args.target_format]]
    if args.options:
        argv += ["-o", ",".join(f"{k}={v.replace(',', ',,')}" for k, v in args.options.items())]
    if args.compress:
        argv.append("-c")
    if args.sparse_size is not None:
        argv += ["-S", str(args.sparse_size)]
    if args.out_of_order:
        argv.append("-W")
    if args.coroutines is not None:
        argv += ["-m", str(args.coroutines)]
    argv.append(os.path.abspath(target))
    return argv


def run(
    argv: Sequence[str],
    limits: Limits,
    on_progress: Callable[[float], None] | None = None,
    meanwhile: AbstractContextManager[object] | None = None,
) -> bytes:
    """Run qemu-img, returning its stdout; a failure raises ``QemuError``.

    With ``on_progress``, stdout is read as ``-p`` progress records and each fraction (0..1)
    is passed on. ``meanwhile`` is entered once qemu-img has started and left when it ends
    (work to overlap with it; entered after the fork, so no thread of its runs across one).
    An exception while waiting (Ctrl-C, a SIGTERM handler) kills qemu-img first.
    """
    returncode, out, errors = _execute(argv, limits, on_progress, meanwhile)
    if returncode != 0:
        raise QemuError(argv, returncode, errors)
    return out


def _execute(
    argv: Sequence[str],
    limits: Limits,
    on_progress: Callable[[float], None] | None,
    meanwhile: AbstractContextManager[object] | None = None,
) -> tuple[int, bytes, str]:
    log.debug("running %s", argv)
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=_environment(),
                preexec_fn=_limiter(limits),
            )
        except OSError as exc:
            raise UsageError(f"cannot run {argv[0]}: {exc.strerror}; install qemu-utils") from exc
        with meanwhile or nullcontext():
            try:
                out = _drain(proc, on_progress)
                returncode = proc.wait()
            finally:
                _reap(proc)
        errors.seek(0)
        return returncode, out, errors.read(STDERR_CAP).decode("utf-8", "replace")


def _drain(proc: subprocess.Popen[bytes], on_progress: Callable[[float], None] | None) -> bytes:
    assert proc.stdout is not None
    kept = bytearray()
    while chunk := os.read(proc.stdout.fileno(), 65536):
        if on_progress is None:
            kept += chunk[: STDOUT_CAP - len(kept)]
            continue
        kept += chunk
        *records, rest = re.split(rb"[\r\n]", bytes(kept))
        kept = bytearray(rest[-256:])
        for record in records:
            if match := _PROGRESS.search(record):
                on_progress(min(float(match.group(1)) / 100, 1.0))
    return bytes(kept) if on_progress is None else b""


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        log.debug("killing qemu-img %d", proc.pid)
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENAS)
    return env


def _limiter(limits: Limits) -> Callable[[], None]:
    # The hard CPU limit sits a little above the soft one so that qemu-img first gets
    # SIGXCPU, which _describe_exit names, rather than a bare SIGKILL.
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))

    return apply
