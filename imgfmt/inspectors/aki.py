"""Kernel images (Glance's ``aki``): x86 bzImage, arm64 ``Image`` and ELF ``vmlinux``.

References:

- Linux ``Documentation/arch/x86/boot.rst``: the real-mode setup header at 0x1f1 (boot
  protocol 2.00 and later, signature ``HdrS`` at 0x202).
- Linux ``Documentation/arch/arm64/booting.rst``: the 64-byte ``Image`` header with the magic
  ``ARM\\x64`` at 0x38; ``arch/arm64/include/asm/image.h`` for the flag bits.
- The System V ABI, "Object Files" (ELF header, program headers, notes) and Linux
  ``include/linux/elfnote.h`` for the notes a kernel carries.
- qemu ``block/raw-format.c``: qemu has no driver for kernels and reads them as raw, so the
  virtual size is raw's (``base.qemu_raw_size``).

Severity rule: qemu reads a kernel as raw and honours none of its headers, so nothing here can
make qemu read outside the file. A finding is UNSAFE when the file is not a self-consistent
kernel of the kind its signature claims (pointers or sizes past the end of the file,
contradictory fields): such a file should not be stored as ``aki``. Reserved fields and flag
bits we do not know are WARNINGs.

ELF rule: any executable carries ``\\x7fELF``, so an ELF file is taken for a kernel only when
it is ``ET_EXEC`` or ``ET_DYN`` for a machine Linux runs on, has no ``PT_INTERP`` (a kernel
has no program interpreter; ``/bin/true`` has one) and has a ``PT_NOTE`` segment with a note
owned by ``Linux`` or ``Xen`` (every vmlinux since 4.19 carries ``Linux`` notes, x86 ones also
``Xen`` notes). A statically linked user program lacks those notes. The notes are read from
where the program headers say; from a stream whose head window ends before them the probe
fails and the file is treated as raw.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, unsafe, warning
from ..source import Source
from .base import Inspection, Inspector, align4, probe_bytes, qemu_raw_size

log = Logger(__name__)

Reader = Callable[[int, int], bytes]

SECTOR = 512
#: Longest kernel version string read from a bzImage.
MAX_VERSION_STRING = 256
#: Most ELF program headers read; vmlinux files have about five.
MAX_PHNUM = 64
#: Most PT_NOTE segments examined, and bytes read from each.
MAX_NOTE_SEGMENTS = 4
MAX_NOTE_BYTES = 4096
#: Most notes walked in one PT_NOTE segment.
MAX_NOTES = 64
#: Furthest offset at which an EFI stub's PE header is looked for.
MAX_PE_OFFSET = 64 * 1024

BOOT_FLAG = 0xAA55
HDRS = b"HdrS"
ARM64_MAGIC = b"ARM\x64"
ELF_MAGIC = b"\x7fELF"
MZ = b"MZ"
PE_SIGNATURE = b"PE\0\0"


# ---------------------------------------------------------------------------------------------
# x86 bzImage (boot.rst, "The real-mode kernel header").

#: The setup header from 0x1f1 to 0x26c. Fields this module does not use are pad bytes.
SETUP_HEADER = struct.Struct(
    "<B2xI6xH2x4sH6xH"  # 0x1f1 setup_sects, 0x1f4 syssize, 0x1fe boot_flag, 0x202 header,
    # 0x206 version, 0x20e kernel_version
    "xB34x"  # 0x211 loadflags
    "BxH16xII16xI8x"  # 0x234 relocatable_kernel, 0x236 xloadflags, 0x248 payload_offset,
    # 0x24c payload_length, 0x260 init_size; ends at 0x26c
)
SETUP_HEADER_OFFSET = 0x1F1
#: Setup protocol versions that added the fields read here.
PROTOCOL_SYSSIZE = 0x0204
PROTOCOL_RELOCATABLE = 0x0205
PROTOCOL_PAYLOAD = 0x0208
PROTOCOL_INIT_SIZE = 0x020A
PROTOCOL_XLOADFLAGS = 0x020C

LOADFLAGS = {
    0: "LOADED_HIGH",
    1: "KASLR_FLAG",
    5: "QUIET_FLAG",
    6: "KEEP_SEGMENTS",
    7: "CAN_USE_HEAP",
}
XLOADFLAGS = {
    0: "XLF_KERNEL_64",
    1: "XLF_CAN_BE_LOADED_ABOVE_4G",
    2: "XLF_EFI_HANDOVER_32",
    3: "XLF_EFI_HANDOVER_64",
    4: "XLF_EFI_KEXEC",
    5: "XLF_5LEVEL",
    6: "XLF_5LEVEL_ENABLED",
}
#: Magic numbers of the compressed payloads boot.rst allows (lib/decompress.c's table).
PAYLOAD_COMPRESSION = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00", "lzma"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x89LZO", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class SetupHeader(NamedTuple):
    """The fields of the x86 setup header this inspector reads (boot.rst names)."""

    setup_sects: int
    syssize: int
    boot_flag: int
    header: bytes
    version: int
    kernel_version: int
    loadflags: int
    relocatable_kernel: int
    xloadflags: int
    payload_offset: int
    payload_length: int
    init_size: int

    @classmethod
    def from_bytes(cls, data: bytes) -> SetupHeader:
        return cls(*SETUP_HEADER.unpack(data))

    @property
    def setup_size(self) -> int:
        """Bytes of the real-mode part; a setup_sects of 0 means 4 (boot.rst)."""
        return ((self.setup_sects or 4) + 1) * SECTOR

    @property
    def protocol(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"


# ---------------------------------------------------------------------------------------------
# arm64 Image (booting.rst, "Call the kernel image").

ARM64_HEADER = struct.Struct("<II Q Q Q Q Q Q 4s I")
ARM64_FLAG_BE = 1 << 0
ARM64_PAGE_SIZES = {0: None, 1: "4K", 2: "16K", 3: "64K"}
ARM64_FLAG_PHYS_BASE = 1 << 3
ARM64_KNOWN_FLAGS = 0xF


class Arm64Header(NamedTuple):
    """The 64-byte header at the start of an arm64 ``Image``."""

    code0: int
    code1: int
    text_offset: int
    image_size: int
    flags: int
    res2: int
    res3: int
    res4: int
    magic: bytes
    res5: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Arm64Header:
        return cls(*ARM64_HEADER.unpack(data))


# ---------------------------------------------------------------------------------------------
# ELF vmlinux (System V ABI, "ELF Header" and "Program Header").

ELF_IDENT = struct.Struct("4sBBB9x")
ELFCLASS = {1: 32, 2: 64}
ELFDATA = {1: "<", 2: ">"}
ELF_HEADER = {
    (32, "<"): struct.Struct("<16xHHIIIIIHHHHHH"),
    (32, ">"): struct.Struct(">16xHHIIIIIHHHHHH"),
    (64, "<"): struct.Struct("<16xHHIQQQIHHHHHH"),
    (64, ">"): struct.Struct(">16xHHIQQQIHHHHHH"),
}
#: Program headers, reordered to (p_type, p_offset, p_filesz, p_memsz) by ``ElfSegment``.
ELF_PHDR = {
    (32, "<"): struct.Struct("<II4x4xII8x"),
    (32, ">"): struct.Struct(">II4x4xII8x"),
    (64, "<"): struct.Struct("<I4xQ8x8xQQ8x"),
    (64, ">"): struct.Struct(">I4xQ8x8xQQ8x"),
}
ELF_NOTE = {"<": struct.Struct("<III"), ">": struct.Struct(">III")}
ET_NAMES = {2: "EXEC", 3: "DYN"}
PT_LOAD = 1
PT_INTERP = 3
PT_NOTE = 4
KERNEL_NOTE_OWNERS = ("Linux", "Xen")
#: e_machine values of architectures Linux runs on, named as ``uname -m`` does for 64 bits.
ELF_MACHINES = {
    3: ("i386", "i386"),
    8: ("mips", "mips64"),
    20: ("ppc", "ppc"),
    21: ("ppc64", "ppc64"),
    22: ("s390", "s390x"),
    40: ("arm", "arm"),
    62: ("x86_64", "x86_64"),
    183: ("aarch64", "aarch64"),
    243: ("riscv32", "riscv64"),
    258: ("loongarch32", "loongarch64"),
}


class ElfHeader(NamedTuple):
    """The ELF file header fields this inspector reads."""

    elf_class: int
    byte_order: str
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_phentsize: int
    e_phnum: int

    @classmethod
    def from_bytes(cls, data: bytes) -> ElfHeader | None:
        """The header, or ``None`` when the identification bytes are not a valid ELF's."""
        if len(data) < ELF_IDENT.size:
            return None
        magic, ei_class, ei_data, ei_version = ELF_IDENT.unpack_from(data)
        if magic != ELF_MAGIC or ei_class not in ELFCLASS or ei_data not in ELFDATA:
            return None
        elf_class, order = ELFCLASS[ei_class], ELFDATA[ei_data]
        layout = ELF_HEADER[elf_class, order]
        if ei_version != 1 or len(data) < layout.size:
            return None
        e_type, e_machine, e_version, e_entry, e_phoff, _, _, _, phentsize, phnum, *_ = (
            layout.unpack_from(data)
        )
        return cls(
            elf_class, order, e_type, e_machine, e_version, e_entry, e_phoff, phentsize, phnum
        )

    @property
    def phdr_layout(self) -> struct.Struct:
        return ELF_PHDR[self.elf_class, self.byte_order]


class ElfSegment(NamedTuple):
    """One program header: where its bytes are in the file."""

    number: int
    p_type: int
    p_offset: int
    p_filesz: int
    p_memsz: int

    @classmethod
    def from_bytes(cls, index: int, data: bytes, layout: struct.Struct) -> ElfSegment:
        return cls(index, *layout.unpack(data))


class ElfKernel(NamedTuple):
    """An ELF file that passed the kernel rule in the module docstring."""

    header: ElfHeader
    segments: tuple[ElfSegment, ...]
    note_owners: tuple[str, ...]


class KernelInspector(Inspector):
    """Linux kernel images: bzImage, arm64 ``Image`` and ELF ``vmlinux``."""

    format = "aki"

    @classmethod
    def probe(cls, source: Source) -> bool:
        if _is_bzimage(probe_bytes(source, 0, 0x206)):
            return True
        if probe_bytes(source, 0x38, 4) == ARM64_MAGIC:
            return True
        return _elf_kernel(lambda o, n: probe_bytes(source, o, n)) is not None

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        virtual_size = qemu_raw_size(source, cls.format)
        size = source.size or 0
        head = cls.read(source, 0, min(size, 0x206), "kernel header")
        if _is_bzimage(head):
            details, findings = _inspect_bzimage(source, size)
        elif source.read(0x38, 4) == ARM64_MAGIC:
            details, findings = _inspect_arm64(source, size)
        else:
            details, findings = _inspect_elf(source, size)
        log.debug("aki %s: %s", source.name, details)
        return Inspection(cls.format, virtual_size, details, tuple(findings))


def _is_bzimage(head: bytes) -> bool:
    return (
        len(head) >= 0x206
        and int.from_bytes(head[0x1FE:0x200], "little") == BOOT_FLAG
        and head[0x202:0x206] == HDRS
    )


def _bit_names(value: int, names: dict[int, str]) -> list[str]:
    return [names.get(bit, f"bit{bit}") for bit in range(value.bit_length()) if value >> bit & 1]


def _inspect_bzimage(source: Source, size: int) -> tuple[dict[str, Any], list[Finding]]:
    hdr = SetupHeader.from_bytes(
        KernelInspector.read(source, SETUP_HEADER_OFFSET, SETUP_HEADER.size, "setup header")
    )
    findings: list[Finding] = []
    details: dict[str, Any] = {
        "kind": "bzimage",
        "boot_protocol": hdr.protocol,
        "version": _bzimage_version(source, hdr, findings),
        "architecture": _bzimage_architecture(hdr),
        "setup_sects": hdr.setup_sects,
        "loadflags": _bit_names(hdr.loadflags, LOADFLAGS),
        "efi_stub": _efi_stub(source, size, findings),
    }
    if hdr.version < 0x0200:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"aki: boot protocol version {hdr.protocol} at 0x206 is older than 2.00, "
                "which introduced the HdrS signature; the header is not a kernel's",
                0x206,
            )
        )
    _check_bzimage_extent(hdr, size, findings)
    details.update(_bzimage_optional(source, hdr, size, findings))
    return details, findings


def _bzimage_architecture(hdr: SetupHeader) -> str | None:
    """x86_64 when XLF_KERNEL_64 is set; protocols before 2.12 do not say."""
    if hdr.version < PROTOCOL_XLOADFLAGS:
        return None
    return "x86_64" if hdr.xloadflags & 1 else "i386"


def _bzimage_optional(
    source: Source, hdr: SetupHeader, size: int, findings: list[Finding]
) -> dict[str, Any]:
    """The fields later boot protocol versions added, for the versions that have them."""
    details: dict[str, Any] = {}
    if hdr.version >= PROTOCOL_RELOCATABLE:
        details["relocatable"] = bool(hdr.relocatable_kernel)
    if hdr.version >= PROTOCOL_INIT_SIZE:
        details["init_size"] = hdr.init_size
    if hdr.version >= PROTOCOL_XLOADFLAGS:
        details["xloadflags"] = _bit_names(hdr.xloadflags, XLOADFLAGS)
    if hdr.version >= PROTOCOL_PAYLOAD:
        details["payload_compression"] = _payload_compression(source, hdr, size, findings)
    return details


def _check_bzimage_extent(hdr: SetupHeader, size: int, findings: list[Finding]) -> None:
    if hdr.setup_size > size:
        findings.append(
            unsafe(
                Code.TRUNCATED,
                f"aki: setup_sects {hdr.setup_sects} at 0x1f1 puts the protected-mode kernel at "
                f"{hdr.setup_size:#x}, past the end of the file ({size:#x}); the kernel is cut "
                "short, get it again",
                0x1F1,
            )
        )
        return
    end = hdr.setup_size + hdr.syssize * 16
    if hdr.version >= PROTOCOL_SYSSIZE and end > size:
        findings.append(
            unsafe(
                Code.TRUNCATED,
                f"aki: syssize {hdr.syssize} at 0x1f4 says the kernel ends at {end:#x}, past "
                f"the end of the file ({size:#x}); the kernel is cut short, get it again",
                0x1F4,
            )
        )


def _bzimage_version(source: Source, hdr: SetupHeader, findings: list[Finding]) -> str | None:
    """The version string kernel_version points at (boot.rst: plus 0x200, within setup)."""
    if hdr.kernel_version == 0:
        return None
    offset = hdr.kernel_version + 0x200
    if offset >= hdr.setup_size:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"aki: kernel_version {hdr.kernel_version:#x} at 0x20e points at {offset:#x}, "
                f"outside the setup code (which ends at {hdr.setup_size:#x})",
                0x20E,
            )
        )
        return None
    raw = source.read(offset, min(MAX_VERSION_STRING, hdr.setup_size - offset))
    text = raw.split(b"\0", 1)[0]
    if b"\0" not in raw or not all(0x20 <= b < 0x7F for b in text):
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"aki: the kernel version string at {offset:#x} is not a NUL-terminated "
                f"printable string within {MAX_VERSION_STRING} bytes",
                offset,
            )
        )
    return text.decode("ascii", errors="replace")


def _payload_compression(
    source: Source, hdr: SetupHeader, size: int, findings: list[Finding]
) -> str | None:
    start = hdr.setup_size + hdr.payload_offset
    end = start + hdr.payload_length
    if end > size:
        findings.append(
            unsafe(
                Code.TRUNCATED,
                f"aki: the compressed kernel (payload_offset {hdr.payload_offset:#x}, "
                f"payload_length {hdr.payload_length:#x} at 0x248) ends at {end:#x}, past the "
                f"end of the file ({size:#x})",
                0x248,
            )
        )
        return None
    head = source.read(start, 6)
    return next((name for magic, name in PAYLOAD_COMPRESSION if head.startswith(magic)), None)


def _efi_stub(source: Source, size: int, findings: list[Finding]) -> bool:
    """True when the kernel is also a PE/COFF image (an EFI stub): ``MZ`` and a PE header."""
    if source.read(0, 2) != MZ:
        return False
    pe_offset = int.from_bytes(source.read(0x3C, 4), "little")
    if pe_offset + 4 <= min(size, MAX_PE_OFFSET) and source.read(pe_offset, 4) == PE_SIGNATURE:
        return True
    findings.append(
        unsafe(
            Code.INVALID_HEADER,
            f"aki: the image starts with MZ but the PE header offset {pe_offset:#x} at 0x3c "
            "does not lead to a PE signature; the EFI stub header is damaged",
            0x3C,
        )
    )
    return False


def _inspect_arm64(source: Source, size: int) -> tuple[dict[str, Any], list[Finding]]:
    hdr = Arm64Header.from_bytes(
        KernelInspector.read(source, 0, ARM64_HEADER.size, "arm64 Image header")
    )
    findings: list[Finding] = []
    details: dict[str, Any] = {
        "kind": "arm64-image",
        "architecture": "aarch64",
        "text_offset": hdr.text_offset,
        "image_size": hdr.image_size,
        "endianness": "big" if hdr.flags & ARM64_FLAG_BE else "little",
        "page_size": ARM64_PAGE_SIZES[hdr.flags >> 1 & 3],
        "phys_base_anywhere": bool(hdr.flags & ARM64_FLAG_PHYS_BASE),
        "efi_stub": _efi_stub(source, size, findings),
    }
    if hdr.flags & ~ARM64_KNOWN_FLAGS:
        findings.append(
            warning(
                Code.UNKNOWN_FEATURE,
                f"aki: arm64 Image flags {hdr.flags:#x} at 0x18 set bits that booting.rst "
                "reserves; a boot loader may refuse this kernel",
                0x18,
            )
        )
    if hdr.res2 or hdr.res3 or hdr.res4:
        findings.append(
            warning(
                Code.INVALID_HEADER,
                "aki: the reserved fields res2..res4 at 0x20..0x37 of the arm64 Image header "
                "are not zero",
                0x20,
            )
        )
    return details, findings


def _inspect_elf(source: Source, size: int) -> tuple[dict[str, Any], list[Finding]]:
    kernel = _elf_kernel(source.read)
    if kernel is None:
        raise KernelInspector.error(
            "no kernel signature: neither a bzImage (HdrS at 0x202), an arm64 Image "
            "(ARM\\x64 at 0x38) nor an ELF kernel (ET_EXEC or ET_DYN, no PT_INTERP, a note "
            "owned by Linux or Xen)",
            0,
        )
    hdr = kernel.header
    names = ELF_MACHINES[hdr.e_machine]
    details: dict[str, Any] = {
        "kind": "elf",
        "architecture": names[hdr.elf_class == 64],
        "elf_class": hdr.elf_class,
        "endianness": "little" if hdr.byte_order == "<" else "big",
        "elf_type": ET_NAMES[hdr.e_type],
        "entry": hdr.e_entry,
        "segments": len(kernel.segments),
        "note_owners": list(kernel.note_owners),
    }
    return details, _check_segments(kernel.segments, hdr, size)


def _check_segments(segments: tuple[ElfSegment, ...], hdr: ElfHeader, size: int) -> list[Finding]:
    findings = []
    for seg in segments:
        at = hdr.e_phoff + seg.number * hdr.e_phentsize
        if seg.p_offset + seg.p_filesz > size:
            findings.append(
                unsafe(
                    Code.TRUNCATED,
                    f"aki: ELF program header {seg.number} at {at:#x} places {seg.p_filesz:#x} "
                    f"bytes at {seg.p_offset:#x}, past the end of the file ({size:#x})",
                    at,
                )
            )
        if seg.p_type == PT_LOAD and seg.p_filesz > seg.p_memsz:
            findings.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"aki: ELF program header {seg.number} at {at:#x} has p_filesz "
                    f"{seg.p_filesz:#x} larger than p_memsz {seg.p_memsz:#x}",
                    at,
                )
            )
    return findings


def _elf_kernel(read: Reader) -> ElfKernel | None:
    """The ELF kernel at the start of the data, or ``None`` when the ELF rule does not hold."""
    header = ElfHeader.from_bytes(read(0, 64))
    if (
        header is None
        or header.e_type not in ET_NAMES
        or header.e_machine not in ELF_MACHINES
        or header.e_version != 1
        or header.e_phentsize != header.phdr_layout.size
        or not 1 <= header.e_phnum <= MAX_PHNUM
    ):
        return None
    table = read(header.e_phoff, header.e_phnum * header.e_phentsize)
    if len(table) != header.e_phnum * header.e_phentsize:
        return None
    segments = tuple(
        ElfSegment.from_bytes(
            i, table[i * header.e_phentsize :][: header.e_phentsize], header.phdr_layout
        )
        for i in range(header.e_phnum)
    )
    if any(seg.p_type == PT_INTERP for seg in segments):
        return None
    notes = [seg for seg in segments if seg.p_type == PT_NOTE][:MAX_NOTE_SEGMENTS]
    owners = tuple(
        owner
        for seg in notes
        for owner in _note_owners(
            read(seg.p_offset, min(seg.p_filesz, MAX_NOTE_BYTES)), header.byte_order
        )
    )
    if not any(owner in KERNEL_NOTE_OWNERS for owner in owners):
        return None
    return ElfKernel(header, segments, tuple(dict.fromkeys(owners)))


def _note_owners(data: bytes, order: str) -> list[str]:
    """The owner names of the notes in one PT_NOTE segment (4-byte aligned, as Linux emits)."""
    layout = ELF_NOTE[order]
    owners = []
    pos = 0
    for _ in range(MAX_NOTES):
        if pos + layout.size > len(data):
            break
        namesz, descsz, _type = layout.unpack_from(data, pos)
        name = data[pos + layout.size : pos + layout.size + namesz]
        owners.append(name.rstrip(b"\0").decode("ascii", errors="replace"))
        pos += layout.size + align4(namesz) + align4(descsz)
    return owners
