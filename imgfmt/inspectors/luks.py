"""LUKS encrypted volume inspector.

References: "LUKS On-Disk Format Specification" version 1.2.3 (the phdr and key slot layout),
"LUKS2 On-Disk Format Specification" version 1.0.0 (the binary header, read only to name it),
qemu 7.2 ``crypto/block-luks.c`` (``qcrypto_block_luks_check_header`` and ``_parse_header``:
what qemu's ``luks`` driver accepts, including its cipher, mode, IV generator and hash names)
and ``block/crypto.c`` (``block_crypto_getlength``: the virtual size is the file size less the
payload offset). Everything is big-endian.

qemu 7.2 reads LUKS1 only and opens the header without the passphrase for ``qemu-img info``;
converting needs the passphrase, which imgfmt never asks for. A LUKS2 (or other version)
volume is named and refused; qemu gives it no size, so its virtual size is reported as 0.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, info, unsafe
from ..source import Source
from .base import Inspection, Inspector, cstring, probe_bytes

log = Logger(__name__)

LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS_VERSION = 1
LUKS2_VERSION = 2
SECTOR_SIZE = 512
NUM_KEY_SLOTS = 8
STRIPES = 4000
KEY_SLOT_DISABLED = 0x0000DEAD
KEY_SLOT_ENABLED = 0x00AC71F3
#: Key material may not start before this (the phdr and its padding).
KEY_SLOT_OFFSET = 4096
HEADER_SECTORS = KEY_SLOT_OFFSET // SECTOR_SIZE

#: Key sizes in bytes qemu accepts for each cipher name (block-luks.c's name map).
CIPHER_KEY_BYTES = {
    "aes": (16, 24, 32),
    "cast5": (16,),
    "serpent": (16, 24, 32),
    "twofish": (16, 24, 32),
}
CIPHER_MODES = ("ecb", "cbc", "xts", "ctr")
IVGEN_ALGS = ("plain", "plain64", "essiv")
#: qemu's hash names and their digest sizes in bytes.
HASH_DIGEST_BYTES = {
    "md5": 16,
    "sha1": 20,
    "sha224": 28,
    "sha256": 32,
    "sha384": 48,
    "sha512": 64,
    "ripemd160": 20,
}

_PHDR = struct.Struct(">6sH32s32s32sII20s32sI40s")
_KEY_SLOT = struct.Struct(">II32sII")
_PHDR_SIZE = _PHDR.size + NUM_KEY_SLOTS * _KEY_SLOT.size
_LUKS2_HEADER = struct.Struct(">6sHQQ48s32s64s40s48sQ")
_SLOTS_AT = _PHDR.size


class KeySlot(NamedTuple):
    """One of the eight key slots of the LUKS1 phdr."""

    active: int
    iterations: int
    salt: bytes
    key_offset_sector: int
    stripes: int

    @classmethod
    def from_bytes(cls, data: bytes) -> KeySlot:
        return cls(*_KEY_SLOT.unpack_from(data))


class LuksHeader(NamedTuple):
    """The LUKS1 partition header (phdr) with its key slots."""

    magic: bytes
    version: int
    cipher_name: bytes
    cipher_mode: bytes
    hash_spec: bytes
    payload_offset: int
    key_bytes: int
    mk_digest: bytes
    mk_digest_salt: bytes
    mk_digest_iter: int
    uuid: bytes
    key_slots: tuple[KeySlot, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> LuksHeader:
        slots = tuple(
            KeySlot.from_bytes(data[_SLOTS_AT + i * _KEY_SLOT.size :]) for i in range(NUM_KEY_SLOTS)
        )
        return cls(*(*_PHDR.unpack_from(data), slots))

    def slot_sectors(self) -> int:
        """Sectors qemu reserves for one slot's key material (rounded as cryptsetup does)."""
        sectors = -(-self.key_bytes * STRIPES // SECTOR_SIZE)
        return -(-sectors // HEADER_SECTORS) * HEADER_SECTORS


class Luks2Header(NamedTuple):
    """The LUKS2 binary header; only its identifying fields are used."""

    magic: bytes
    version: int
    hdr_size: int
    seqid: int
    label: bytes
    checksum_alg: bytes
    salt: bytes
    uuid: bytes
    subsystem: bytes
    hdr_offset: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Luks2Header:
        return cls(*_LUKS2_HEADER.unpack_from(data))


class LuksInspector(Inspector):
    """LUKS volumes as qemu's ``luks`` driver reads them."""

    format = "luks"

    @classmethod
    def probe(cls, source: Source) -> bool:
        # Any version matches, so that a LUKS2 volume is named and refused, not taken for raw.
        return probe_bytes(source, 0, len(LUKS_MAGIC)) == LUKS_MAGIC

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        head = cls.read(source, 0, 8, "magic and version")
        if head[:6] != LUKS_MAGIC:
            raise cls.error(f"magic {head[:6]!r} at 0x0 is not LUKS's", 0)
        version = struct.unpack_from(">H", head, 6)[0]
        if version == LUKS2_VERSION:
            return cls._inspect_luks2(source)
        if version != LUKS_VERSION:
            finding = cls._unsupported_version(version)
            return Inspection(cls.format, 0, {"version": version}, (finding,))

        header = LuksHeader.from_bytes(cls.read(source, 0, _PHDR_SIZE, "phdr"))
        log.debug("luks: %s, payload at sector %d", source.name, header.payload_offset)
        findings = cls._check_strings(header)
        if not findings:
            findings = cls._check_cipher(header)
        findings += cls._check_layout(header, source.size)
        findings += cls._check_slots(header, source.size)
        findings.append(
            info(
                Code.ENCRYPTED,
                "luks: the disk is encrypted; converting it needs its passphrase"
                " (qemu-img --object secret,... --image-opts)",
                0,
            )
        )
        return Inspection(
            cls.format,
            cls._virtual_size(header, source.size),
            cls._details(header),
            tuple(findings),
        )

    @staticmethod
    def _virtual_size(h: LuksHeader, size: int | None) -> int:
        """The file size (qemu rounds it up to a sector) less the payload offset."""
        if size is None:
            return 0
        return max(0, -(-size // SECTOR_SIZE) * SECTOR_SIZE - h.payload_offset * SECTOR_SIZE)

    @classmethod
    def _inspect_luks2(cls, source: Source) -> Inspection:
        h2 = Luks2Header.from_bytes(cls.read(source, 0, _LUKS2_HEADER.size, "LUKS2 header"))
        details = {
            "version": h2.version,
            "label": cstring(h2.label),
            "checksum_alg": cstring(h2.checksum_alg),
            "hdr_size": h2.hdr_size,
            "uuid": cstring(h2.uuid),
        }
        return Inspection(cls.format, 0, details, (cls._unsupported_version(h2.version),))

    @staticmethod
    def _unsupported_version(version: int) -> Finding:
        return unsafe(
            Code.UNSUPPORTED_VERSION,
            f"luks: version {version} at 0x6; qemu 7.2 reads only LUKS1 and refuses the volume"
            " (cryptsetup convert --type luks1 can rewrite a LUKS2 header)",
            6,
        )

    @classmethod
    def _check_strings(cls, h: LuksHeader) -> list[Finding]:
        """qemu wants each spec string NUL-terminated within its field."""
        found = []
        for name, raw, offset in (
            ("cipher_name", h.cipher_name, 0x8),
            ("cipher_mode", h.cipher_mode, 0x28),
            ("hash_spec", h.hash_spec, 0x48),
        ):
            if b"\0" not in raw:
                found.append(cls._refused(f"{name} is not NUL-terminated", offset))
        return found

    @classmethod
    def _check_cipher(cls, h: LuksHeader) -> list[Finding]:
        """The cipher, mode, IV generator and hash names qemu can use (_parse_header)."""
        problem = _cipher_problem(
            cstring(h.cipher_name), cstring(h.cipher_mode), cstring(h.hash_spec), h.key_bytes
        )
        if not problem:
            return []
        return [
            unsafe(
                Code.UNSUPPORTED_ENCRYPTION,
                f"luks: {problem} (cipher spec at 0x8..0x68, key_bytes at 0x6c); qemu refuses the"
                " volume: re-encrypt it with a cipher qemu supports, e.g. aes-xts-plain64",
                0x8,
            )
        ]

    @classmethod
    def _check_layout(cls, h: LuksHeader, size: int | None) -> list[Finding]:
        found = []
        if h.payload_offset < HEADER_SECTORS:
            found.append(
                cls._refused(f"payload_offset {h.payload_offset} sectors overlaps the header", 0x68)
            )
        if h.mk_digest_iter == 0:
            found.append(cls._refused("mk_digest_iter is 0", 0xA4))
        if (
            size is not None
            and h.payload_offset * SECTOR_SIZE > -(-size // SECTOR_SIZE) * SECTOR_SIZE
        ):
            found.append(
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"luks: payload_offset {h.payload_offset * SECTOR_SIZE:#x} (at 0x68) is past"
                    f" the end of the file ({size:#x}); the volume is truncated and qemu refuses"
                    " it",
                    0x68,
                )
            )
        return found

    @classmethod
    def _check_slots(cls, h: LuksHeader, size: int | None) -> list[Finding]:
        found = []
        length = h.slot_sectors()
        for index, slot in enumerate(h.key_slots):
            at = _SLOTS_AT + index * _KEY_SLOT.size
            found += cls._check_slot(h, index, slot, at)
            end = (slot.key_offset_sector + length) * SECTOR_SIZE
            if size is not None and end > size and slot.key_offset_sector >= HEADER_SECTORS:
                found.append(
                    unsafe(
                        Code.OUT_OF_BOUNDS,
                        f"luks: key slot {index} material"
                        f" {slot.key_offset_sector * SECTOR_SIZE:#x}..{end:#x} (key_offset at"
                        f" {at + 40:#x}) runs past the end of the file ({size:#x})",
                        at + 40,
                    )
                )
            for other in range(index + 1, NUM_KEY_SLOTS):
                start2 = h.key_slots[other].key_offset_sector
                start1 = slot.key_offset_sector
                if start1 < start2 + length and start2 < start1 + length:
                    found.append(cls._refused(f"key slots {index} and {other} overlap", at + 40))
        return found

    @classmethod
    def _check_slot(cls, h: LuksHeader, index: int, slot: KeySlot, at: int) -> list[Finding]:
        """One key slot as qemu checks it: every slot, active or not."""
        problems = []
        if slot.stripes != STRIPES:
            problems.append(f"stripes {slot.stripes} is not {STRIPES}")
        if slot.active not in (KEY_SLOT_DISABLED, KEY_SLOT_ENABLED):
            problems.append(f"active marker {slot.active:#010x} is neither enabled nor disabled")
        elif slot.active == KEY_SLOT_ENABLED and slot.iterations == 0:
            problems.append("iterations is 0")
        if slot.key_offset_sector < HEADER_SECTORS:
            problems.append(f"key material at sector {slot.key_offset_sector} is in the header")
        found = [cls._refused(f"key slot {index}: {p}", at) for p in problems]
        end = slot.key_offset_sector + h.slot_sectors()
        if slot.key_offset_sector >= HEADER_SECTORS and end > h.payload_offset:
            # qemu adds start and length in 32 bits: a slot near 2**32 sectors slips past it.
            why = "qemu refuses the volume" if end <= 0xFFFFFFFF else "qemu 7.2 misses it"
            found.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"luks: key slot {index}: key material at sector {slot.key_offset_sector} runs"
                    f" into the payload at sector {h.payload_offset} (at {at:#x}); {why}",
                    at,
                )
            )
        return found

    @classmethod
    def _refused(cls, message: str, offset: int) -> Finding:
        return unsafe(
            Code.INVALID_HEADER,
            f"luks: {message} (at {offset:#x}); qemu refuses the volume",
            offset,
        )

    @staticmethod
    def _details(h: LuksHeader) -> dict[str, Any]:
        return {
            "version": h.version,
            "cipher_name": cstring(h.cipher_name),
            "cipher_mode": cstring(h.cipher_mode),
            "hash_spec": cstring(h.hash_spec),
            "payload_offset": h.payload_offset * SECTOR_SIZE,
            "key_bytes": h.key_bytes,
            "active_key_slots": [
                i for i, slot in enumerate(h.key_slots) if slot.active == KEY_SLOT_ENABLED
            ],
            "uuid": cstring(h.uuid),
        }


def _cipher_problem(name: str, mode_spec: str, hash_spec: str, key_bytes: int) -> str:
    """Why qemu would not use this cipher specification, or "" when it would."""
    mode, dash, ivgen_spec = mode_spec.partition("-")
    if not dash:
        return f"cipher_mode {mode_spec!r} is not <mode>-<ivgen>[:<hash>]"
    ivgen, colon, ivhash = ivgen_spec.partition(":")
    if colon and ivhash not in HASH_DIGEST_BYTES:
        return f"IV generator hash {ivhash!r} is not supported"
    if mode not in CIPHER_MODES:
        return f"cipher mode {mode!r} is not supported"
    # XTS splits the key in two halves of the cipher's key size.
    cipher_key = key_bytes // 2 if mode == "xts" else key_bytes
    if mode == "xts" and key_bytes % 2:
        return f"key_bytes {key_bytes} is odd for XTS"
    if cipher_key not in CIPHER_KEY_BYTES.get(name, ()):
        return f"cipher {name!r} with a {cipher_key}-byte key is not supported"
    if hash_spec not in HASH_DIGEST_BYTES:
        return f"hash_spec {hash_spec!r} is not supported"
    if ivgen not in IVGEN_ALGS:
        return f"IV generator {ivgen!r} is not supported"
    if ivgen == "essiv":
        return _essiv_problem(name, cipher_key, ivhash)
    return ""


def _essiv_problem(name: str, cipher_key: int, ivhash: str) -> str:
    """ESSIV keys the cipher with the hash's digest, so the cipher must take that key size."""
    if not ivhash:
        return "the essiv IV generator has no hash"
    digest = HASH_DIGEST_BYTES[ivhash]
    if digest == cipher_key or digest in CIPHER_KEY_BYTES[name]:
        return ""
    return f"essiv with {ivhash} needs a {digest}-byte {name} key, which qemu has not"
