"""Container images as archives: ``docker save`` output and OCI image layout archives.

References: OCI image-spec v1.1 ("image-layout.md": ``oci-layout``, ``index.json`` and
``blobs/<alg>/<encoded>``; "descriptor.md": mediaType, digest, size; "manifest.md";
"config.md": architecture, os, ``rootfs.diff_ids``; "layer.md": a layer is a tar, maybe gzip or
zstd compressed, and its DiffID is the sha256 of the uncompressed tar) and Docker's image
specification v1.2 (the legacy ``docker save`` form: ``manifest.json`` with Config, RepoTags
and Layers, and ``repositories``). Docker 25 and later write both at once: an OCI layout plus
``manifest.json``; that form is read through its OCI index.

Every blob is hashed and compared with the digest that names it, every layer is walked as a
tar in one pass that also hashes its compressed and uncompressed bytes (the DiffID), with the
member checks of ``tarsafe``. Inside a layer, a root filesystem, symlinks and devices are
ordinary, so only names escaping the root, hard links out of it and repeats are findings
there; in the outer archive every link or device is unsafe.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from ..errors import FormatError
from ..report import Code, Finding, unsafe, warning
from ..source import Source
from . import tarsafe
from .base import Container, ContainerInspection, InspectMember, Reader
from .compressed import SourceStream, compression, open_decompressed, read_chunk
from .tarsafe import StreamCursor, TarMember

FORMAT = "docker"
#: Members whose names the probe looks at for manifest.json or oci-layout.
PROBE_MEMBERS = 1024
#: Largest JSON document (index, manifest, config) read into memory.
MAX_JSON = 4 * 1024 * 1024
#: Uncompressed bytes walked per layer before it is declared a bomb.
MAX_LAYER_UNCOMPRESSED = 16 * 1024 * 1024 * 1024
#: Uncompressed bytes walked over all layers: each layer's cap alone lets an archive of many
#: small bombs (a 16 GiB layer of zeros is 600 KiB of zstd) keep imgfmt busy for hours.
MAX_TOTAL_UNCOMPRESSED = 4 * MAX_LAYER_UNCOMPRESSED
#: A layer decompresses to at most this many times its compressed size, plus LAYER_SLACK.
#: gzip cannot pass 1032:1, so only a zstd or xz bomb meets this: without it a 2 MB archive of
#: four 16 GiB zstd layers of zeros walked the whole 64 GiB, about a minute.
MAX_LAYER_RATIO = 1024
LAYER_SLACK = 64 * 1024 * 1024
#: Images (manifest.json entries, index entries) and layers of one image read: Docker stacks
#: at most 127 layers. Each name is a lookup and maybe a finding: 400000 layer names in a
#: 3.5 MB archive made as many findings, 9 s for imgfmt inspect. Each image lists its layers
#: in the details: 1000 images of 800 layers named "a" printed 95 MB of JSON from 4 MB.
MAX_IMAGES = 64
MAX_LAYERS = 1024
#: Tags listed in the details, and the longest repository and tag names Docker accepts.
MAX_TAGS = 256
MAX_REPOSITORY = 255
MAX_TAG = 128
#: Findings of the archive's checks and of its layers' members listed one by one; the rest
#: are counted.
MAX_NOTES = 256
#: Nesting of image indexes followed from index.json.
MAX_INDEX_DEPTH = 4
MEDIA_INDEX = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
REF_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_HASHES = frozenset({"sha256", "sha512"})


class DockerContainer(Container):
    """A ``docker save`` archive (legacy or OCI form) or an OCI image layout archive."""

    format = FORMAT

    @classmethod
    def probe(cls, source: Source) -> bool:
        if not tarsafe.probe(source):
            return False
        found = {_key(n) for n in tarsafe.names(source, PROBE_MEMBERS)}
        return bool(found & {"manifest.json", "oci-layout"})

    @classmethod
    def inspect(cls, source: Source, inspect_member: InspectMember) -> ContainerInspection:
        members = list(tarsafe.walk(tarsafe.SourceCursor(source), FORMAT))
        archive = _Archive(source, members)
        rule = tarsafe.LinkRule.INSIDE
        archive.findings.extend(tarsafe.member_findings(members, FORMAT, source.size, rule))
        if "oci-layout" in archive.files:
            form = "docker-save-oci" if "manifest.json" in archive.files else "oci-layout"
            images = archive.oci_images()
            if form == "docker-save-oci":
                # docker load reads index.json or manifest.json, as its image store has it.
                archive.check_same(images, archive.legacy_images())
        else:
            form = "docker-save"
            images = archive.legacy_images()
        archive.verify_remaining_blobs()
        archive.findings.extend(archive.unlisted())
        details = _summary(form, images, archive)
        return ContainerInspection(FORMAT, None, None, details, tuple(archive.findings))


class _Walked(NamedTuple):
    """What one walk of a layer member found: its digest, its DiffID (``None`` past the
    cap), its compression, its uncompressed size and its tar members."""

    blob: str
    diff_id: str | None
    compression: str | None
    uncompressed_size: int | None
    members: int


class _Archive:
    """One archive being read: its members, what was verified, and the findings so far."""

    def __init__(self, source: Source, members: list[TarMember]) -> None:
        self.source = source
        self.files = {_key(m.name): m for m in members if m.is_file}
        self.links = {_key(m.name): m for m in members if m.typeflag in tarsafe.LINKS}
        self.findings: list[Finding] = []
        self.notes = 0
        self.verified: set[str] = set()
        self.layers: dict[str, dict[str, Any]] = {}
        self.walked: dict[tuple[int, str], _Walked] = {}
        self.parsed: dict[int, tuple[bytes, Any, str | None]] = {}
        self.digests: dict[tuple[int, str], str] = {}
        self.tags: list[str] = []
        self.uncompressed = 0
        # Read once each: indexes that name one index or manifest many times over would
        # otherwise multiply the work at every level.
        self.followed: set[str] = set()
        self.documents: dict[tuple[str, str | None, int | None], Any] = {}

    def oci_images(self) -> list[dict[str, Any]]:
        layout = self.document("oci-layout", None)
        if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
            self.note(warning, Code.UNSUPPORTED_VERSION, "oci-layout is not version 1.0.0")
        index = self.document("index.json", None)
        images: list[dict[str, Any]] = []
        for descriptor in self.capped(_list(index, "manifests"), MAX_IMAGES, "index.json entries"):
            images.extend(self.follow(descriptor, 0))
        self.add_tags(_repo_tags(self.document_if("manifest.json")))
        return images

    def legacy_images(self) -> list[dict[str, Any]]:
        images = []
        entries = _as_list(self.document("manifest.json", None))
        for entry in self.capped(entries, MAX_IMAGES, "manifest.json entries"):
            config_path = entry.get("Config") if isinstance(entry, dict) else None
            if not isinstance(config_path, str):
                self.note(unsafe, Code.INVALID_HEADER, "manifest.json entry has no Config")
                continue
            config = self.document(config_path, _digest_from_path(config_path))
            diff_ids = _diff_ids(config)
            layers = []
            paths = self.capped(_strings(entry.get("Layers")), MAX_LAYERS, f"{config_path} layers")
            for number, path in enumerate(paths):
                diff_id = diff_ids[number] if number < len(diff_ids) else None
                layers.append(self.layer(path, _digest_from_path(path), None, diff_id))
            self.add_tags(_strings(entry.get("RepoTags")))
            images.append({**_config_facts(config), "config": config_path, "layers": layers})
        self.add_tags(_repositories(self.document_if("repositories")))
        return images

    def follow(self, descriptor: Any, depth: int) -> list[dict[str, Any]]:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
            self.note(unsafe, Code.INVALID_HEADER, "an index entry has no digest")
            return []
        annotations = descriptor.get("annotations")
        if isinstance(annotations, dict):
            self.add_tags(str(annotations[k]) for k in REF_ANNOTATIONS if k in annotations)
        digest = descriptor["digest"]
        if digest in self.followed:
            return []
        self.followed.add(digest)
        document = self.document(_blob_path(digest), digest, descriptor.get("size"))
        if _string(descriptor, "mediaType") in MEDIA_INDEX or _list(document, "manifests"):
            if depth >= MAX_INDEX_DEPTH:
                self.note(unsafe, Code.INVALID_HEADER, f"indexes nest deeper than {depth}")
                return []
            entries = self.capped(_list(document, "manifests"), MAX_IMAGES, f"{digest} entries")
            return [i for d in entries for i in self.follow(d, depth + 1)]
        return [self.image(digest, document)]

    def image(self, digest: str, manifest: Any) -> dict[str, Any]:
        config_descriptor = manifest.get("config") if isinstance(manifest, dict) else None
        config = config_path = None
        if isinstance(config_descriptor, dict) and isinstance(config_descriptor.get("digest"), str):
            config_digest = config_descriptor["digest"]
            config_path = _blob_path(config_digest)
            config = self.document(config_path, config_digest, config_descriptor.get("size"))
        else:
            self.note(unsafe, Code.INVALID_HEADER, f"manifest {digest} has no config")
        diff_ids = _diff_ids(config)
        layers = []
        descriptors = self.capped(_list(manifest, "layers"), MAX_LAYERS, f"{digest} layers")
        for number, layer in enumerate(descriptors):
            if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
                self.note(unsafe, Code.INVALID_HEADER, f"manifest {digest} has a bad layer")
                continue
            diff_id = diff_ids[number] if number < len(diff_ids) else None
            path = _blob_path(layer["digest"])
            layers.append(self.layer(path, layer["digest"], layer, diff_id))
        facts = _config_facts(config)
        return {"manifest": digest, **facts, "config": config_path, "layers": layers}

    def check_same(self, oci: list[dict[str, Any]], legacy: list[dict[str, Any]]) -> None:
        """Each image of manifest.json must be one of index.json's: same config, same layers."""
        described = {_image_key(image) for image in oci}
        for image in legacy:
            if _image_key(image) not in described:
                message = (
                    f"manifest.json names config {image['config']} with layers "
                    f"{', '.join(layer['path'] for layer in image['layers']) or 'none'}, an "
                    "image index.json does not describe; docker load reads one or the other"
                )
                self.note(unsafe, Code.INVALID_HEADER, message)

    def document_if(self, path: str) -> Any:
        return self.document(path, None) if path in self.files else None

    def document(self, path: str, digest: str | None, size: Any = None) -> Any:
        """A JSON member, its digest and declared size verified; ``None`` when unusable."""
        key = (path, digest, size if isinstance(size, int) else None)
        if key not in self.documents:
            self.documents[key] = self.read_document(path, digest, size)
        return self.documents[key]

    def read_document(self, path: str, digest: str | None, size: Any) -> Any:
        member = self.member(path)
        if member is None:
            return None
        if member.size > MAX_JSON:
            self.note(unsafe, Code.INVALID_HEADER, f"{path} is over {MAX_JSON} bytes")
            return None
        data, value, error = self.json_member(member)
        self.check_size(path, member, size)
        actual = self.member_digest(member, data, digest) if digest is not None else None
        if digest is not None and actual is not None:
            self.check_digest(path, digest, actual)
        if error is not None:
            self.note(unsafe, Code.INVALID_HEADER, f"{path} is not valid JSON: {error}")
        return value

    def json_member(self, member: TarMember) -> tuple[bytes, Any, str | None]:
        """A JSON member's bytes, value and parse error, read once however many names lead to
        it (slashes, links, declared sizes): 100 names of one 4 MB config held 740 MB."""
        if member.offset not in self.parsed:
            data = tarsafe.read_member(self.source, member, MAX_JSON, FORMAT)
            try:
                self.parsed[member.offset] = (data, json.loads(data), None)
            except (ValueError, RecursionError) as exc:
                self.parsed[member.offset] = (data, None, str(exc))
        return self.parsed[member.offset]

    def member_digest(self, member: TarMember, data: bytes, digest: str) -> str | None:
        """``algorithm:hex`` of a member's ``data`` in the algorithm ``digest`` names, once."""
        algorithm = _algorithm(digest, self)
        if algorithm is None:
            return None
        key = (member.offset, algorithm)
        if key not in self.digests:
            self.digests[key] = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        return self.digests[key]

    def layer(
        self, path: str, digest: str | None, descriptor: dict[str, Any] | None, diff: Any
    ) -> dict[str, Any]:
        """Walk one layer (once, however many images share it) and describe it."""
        if path in self.layers:
            return self.layers[path]
        media_type = descriptor.get("mediaType") if descriptor else None
        facts: dict[str, Any] = {"path": path, "digest": digest, "media_type": media_type}
        member = self.member(path)
        if member is not None:
            self.check_size(path, member, descriptor.get("size") if descriptor else None)
            facts.update(self.walk_layer(path, member, digest, diff))
        self.layers[path] = facts
        return facts

    def walk_layer(
        self, path: str, member: TarMember, digest: str | None, diff: Any
    ) -> dict[str, Any]:
        """A layer member's facts for one reference to it, with the digests it names checked."""
        algorithm = _algorithm(digest, self) if digest else "sha256"
        # Paths that differ only in slashes, or links, name one member: walk it once, or
        # a 40 KB archive naming a 1 GiB layer 64 times took a minute.
        key = (member.offset, algorithm or "sha256")
        if key not in self.walked:
            self.walked[key] = self.walk(path, member, algorithm or "sha256")
        walked = self.walked[key]
        if digest is not None and algorithm is not None:
            self.check_digest(path, digest, walked.blob)
        if isinstance(diff, str) and walked.diff_id is not None:
            self.check_digest(f"{path} (uncompressed)", diff, walked.diff_id)
        return {
            "size": member.size,
            "compression": walked.compression,
            "uncompressed_size": walked.uncompressed_size,
            "members": walked.members,
        }

    def walk(self, path: str, member: TarMember, algorithm: str) -> _Walked:
        """Read a layer member through: hash it, decompress it and walk its tar."""
        blob_hash = hashlib.new(algorithm)
        raw = io.BufferedReader(
            SourceStream(self.source, member.offset, member.size, blob_hash.update), tarsafe.CHUNK
        )
        kind = compression(raw.peek(16)[:16])
        stream = open_decompressed(kind, raw) if kind else raw
        cap = min(
            MAX_LAYER_UNCOMPRESSED,
            MAX_TOTAL_UNCOMPRESSED - self.uncompressed,
            MAX_LAYER_RATIO * member.size + LAYER_SLACK,
        )
        tap = _Tap(stream, f"{FORMAT} layer {path}", cap)
        members: list[TarMember] = []
        try:
            members = list(tarsafe.walk(StreamCursor(tap), tap.fmt))
            tap.drain()
        except FormatError as exc:
            code = Code.DECOMPRESSION_LIMIT if tap.over else Code.INVALID_HEADER
            self.note(unsafe, code, f"layer {path}: {exc.detail}")
        self.uncompressed += tap.size
        while raw.read(tarsafe.CHUNK):
            pass
        rule = tarsafe.LinkRule.ROOTFS
        self.add(tarsafe.member_findings(members, tap.fmt, None, rule))
        return _Walked(
            f"{algorithm}:{blob_hash.hexdigest()}",
            None if tap.over else f"sha256:{tap.hash.hexdigest()}",
            kind,
            None if tap.over else tap.size,
            len(members),
        )

    def verify_remaining_blobs(self) -> None:
        for path, member in self.files.items():
            if path.startswith("blobs/") and path not in self.verified:
                digest = _digest_from_path(path)
                if digest is None:
                    self.note(warning, Code.UNSAFE_MEMBER, f"{path} is not a digest-named blob")
                    continue
                found = tarsafe.digest_members(self.source, [member], {member.name: {"sha256"}})
                actual = found.get(member.name, {}).get("sha256", "")
                self.check_digest(path, digest, f"sha256:{actual}")

    def member(self, path: str) -> TarMember | None:
        """The regular member at ``path``, through one link (legacy layer.tar links)."""
        member = self.files.get(_key(path))
        link = self.links.get(_key(path))
        if member is None and link is not None:
            target = tarsafe.link_target(link)
            member = self.files.get(target) if target is not None else None
        if member is None:
            self.note(unsafe, Code.MISSING_MEMBER, f"{path} is referenced but not in the archive")
        return member

    def check_size(self, path: str, member: TarMember, size: Any) -> None:
        if isinstance(size, int) and size != member.size:
            message = f"{path} is {member.size} bytes, its descriptor says {size}"
            self.note(unsafe, Code.DIGEST_MISMATCH, message)

    def check_digest(self, path: str, expected: str, actual: str) -> None:
        self.verified.add(_key(path))
        if expected.lower() != actual:
            message = f"{path} hashes to {actual}, not {expected}; the blob was altered"
            self.note(unsafe, Code.DIGEST_MISMATCH, message)

    def add_tags(self, tags: Iterable[str]) -> None:
        """Keep the first ``MAX_TAGS`` tags, taking no more from ``tags`` than that."""
        self.tags.extend(itertools.islice(tags, max(0, MAX_TAGS - len(self.tags))))

    def note(self, kind: Any, code: Code, message: str) -> None:
        self.add([kind(code, f"{FORMAT}: {message}")])

    def add(self, findings: list[Finding]) -> None:
        """Findings of the archive's checks and its layers' members, listed up to
        ``MAX_NOTES`` in all: a 150 KB zstd layer of 99000 members named '../x' made 99000."""
        self.findings.extend(findings[: max(0, MAX_NOTES - self.notes)])
        self.notes += len(findings)

    def unlisted(self) -> list[Finding]:
        """One finding for the notes past ``MAX_NOTES``, which were counted, not listed."""
        if self.notes <= MAX_NOTES:
            return []
        message = f"{FORMAT}: {self.notes - MAX_NOTES} more problems were found, not listed"
        return [unsafe(Code.INVALID_HEADER, message)]

    def capped(self, items: list[Any], cap: int, what: str) -> list[Any]:
        """The first ``cap`` of ``items``, noting that the rest were not read."""
        if len(items) > cap:
            message = f"{len(items)} {what}; only the first {cap} were read"
            self.note(unsafe, Code.INVALID_HEADER, message)
        return items[:cap]


class _Tap:
    """The decompressed layer as read by the tar walk: hashed, counted and capped."""

    def __init__(self, stream: Reader, fmt: str, cap: int = MAX_LAYER_UNCOMPRESSED) -> None:
        self.stream = stream
        self.fmt = fmt
        self.cap = cap
        self.hash = hashlib.sha256()
        self.size = 0
        self.over = False

    def read(self, length: int = tarsafe.CHUNK, /) -> bytes:
        # One byte past the cap tells a layer that ends there from one that goes on.
        data = read_chunk(self.stream, min(length, self.cap + 1 - self.size), self.fmt, self.size)
        if self.size + len(data) > self.cap:
            self.over = True
            raise FormatError(
                self.fmt,
                f"decompresses past {self.cap} bytes ({MAX_LAYER_UNCOMPRESSED} a layer, "
                f"{MAX_TOTAL_UNCOMPRESSED} for all layers, {MAX_LAYER_RATIO} times a layer's "
                f"compressed size plus {LAYER_SLACK}); a bomb or too large",
            )
        self.hash.update(data)
        self.size += len(data)
        return data

    def close(self) -> None:
        self.stream.close()

    def drain(self) -> None:
        while self.read(tarsafe.CHUNK):
            pass


def _summary(form: str, images: list[dict[str, Any]], archive: _Archive) -> dict[str, Any]:
    layers = list(archive.layers.values())
    sizes = [layer.get("uncompressed_size") for layer in layers]
    total = sum(s for s in sizes if isinstance(s, int)) if None not in sizes else None
    first = images[0] if images else {}
    return {
        "form": form,
        "tags": sorted(set(archive.tags)),
        "architecture": first.get("architecture"),
        "os": first.get("os"),
        "images": images,
        "total_uncompressed_size": total,
    }


def _image_key(image: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    layers = tuple(_key(layer["path"]) for layer in image["layers"])
    return _key(image.get("config") or ""), layers


def _key(name: str) -> str:
    return name.removeprefix("./").strip("/")


def _blob_path(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _digest_from_path(path: str) -> str | None:
    parts = _key(path).split("/")
    name = parts[-1].removesuffix(".json").removesuffix(".tar")
    if len(parts) == 3 and parts[0] == "blobs":
        return f"{parts[1]}:{name}"
    if len(parts) == 1 and len(name) == 64:
        return f"sha256:{name}"
    return None


def _algorithm(digest: str, archive: _Archive) -> str | None:
    algorithm = digest.partition(":")[0]
    if algorithm not in _HASHES:
        archive.note(unsafe, Code.DIGEST_MISMATCH, f"digest {digest} uses an unknown algorithm")
        return None
    return algorithm


def _config_facts(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        return {"architecture": None, "os": None}
    return {"architecture": config.get("architecture"), "os": config.get("os")}


def _diff_ids(config: Any) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    return _strings(rootfs.get("diff_ids") if isinstance(rootfs, dict) else None)


def _repo_tags(manifest: Any) -> list[str]:
    return [
        t
        for entry in _as_list(manifest)
        if isinstance(entry, dict)
        for t in _strings(entry.get("RepoTags"))
    ]


def _repositories(document: Any) -> Iterator[str]:
    """``repo:tag`` of the legacy ``repositories`` file. A name longer than Docker allows (255
    characters a repository, 128 a tag) names no image docker load accepts: it is no tag, and
    each of a million tags once made a copy of one 2 MB repository name."""
    if not isinstance(document, dict):
        return
    for repo, tags in document.items():
        if isinstance(tags, dict) and len(repo) <= MAX_REPOSITORY:
            yield from (f"{repo}:{tag}" for tag in tags if len(tag) <= MAX_TAG)


def _list(document: Any, key: str) -> list[Any]:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, list) else []


def _string(document: Any, key: str) -> str | None:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
