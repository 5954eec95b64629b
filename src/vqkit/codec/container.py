"""The .vqk container: header, per-image records, payloads (docs/format.md gives it byte by byte).

    magic "VQ" | version u8 | entropy model u8 [| file CRC-32 u32 (version 5 on)] | fingerprint 6 bytes
    | image count varint
    per image: height varint | width varint | mode u8 [| coded height varint | coded width varint]
               [| stage count varint (version 4; version 5: only when the mode's STAGED flag is set)]
               | codes length varint [| alpha length varint]
               | payload CRC-32 u32 (versions 3 and 4)
    header CRC-32 u32 (versions 3 and 4)
    per image, in order: codes payload [then alpha payload]

Parsing checks every count and length against fixed limits and against the bytes that remain before
anything is allocated, so a damaged or hostile file costs at most a bounded amount of memory and time.
From version 3 on, a CRC-32 over the header and one over each image's payloads make any corruption a
CodecError instead of wrong pixels: CRC-32 detects every error burst up to 32 bits and all but
2**-32 of the others. Versions 1 and 2 (no checksums) are still read. Version 4 adds each image's
stage count n (a residual VQ run codes the first n of its S stages; 1 for every other run); files of
versions 1 to 3 hold one stage per image. Version 5 is the compact layout for small images, whose
header is most of the file (a 32x32 CIFAR-10 image codes in about 57 bytes): one CRC-32 over the
whole file (every byte but its own four) replaces the per-payload and header checksums, and the stage
count is written only for images of more than one stage (the mode byte's STAGED flag), 5 bytes less
per single-image file with the same protection against damage. The file checksum sits before the
fingerprint, so a damaged version byte cannot make a reader skip the checksum and still read the
right fingerprint: a version 5 file read as any other version finds a wrong fingerprint (or a wrong
checksum), and so does any other version read as version 5. Behind the fingerprint, a version 5 index
is a version 1 index, and with the checksum at the end two flipped bits (version 5 -> 1, and a
length that swallows the checksum) decoded silently in a fuzz run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import IntEnum

from vqkit.data import DataError

MAGIC = b"VQ"
FORMAT_VERSION = 5  # the version this vqkit writes, and the newest it reads
GROUPED_SINCE = 4  # the first version whose files may use EntropyModel.GROUPED
CHECKSUMS = 3  # the first version with header and payload checksums
STAGE_COUNTS = 4  # the first version with a stage count per image
COMPACT = 5  # the first version with one file checksum and stage counts only where above 1
MAX_STAGES = 64  # stage counts above this are refused as corrupt (a run's own S is checked on decoding)
RESAMPLED = 0x80  # mode byte flag (version 2 on): the coded height and width follow the mode
STAGED = 0x40  # mode byte flag (version 5 on): a stage count (>= 2) follows; absent, the image has 1
FINGERPRINT_BYTES = 6
CRC_BYTES = 4  # CRC-32 (zlib's polynomial, as in PNG and gzip), little-endian
FILE_CRC_AT = 4  # version 5: the file checksum follows magic, version and entropy model id

MAX_SIDE = 1 << 15  # pixels per image side
MAX_PIXELS = 1 << 24  # pixels per image (e.g. 4096 x 4096)
MAX_IMAGES = 1 << 20  # images per container
MAX_VARINT_BYTES = 5  # values below 2**35


class CodecError(DataError):
    """A .vqk file (or an input to it) is truncated, corrupt, foreign, or needs another model."""


class EntropyModel(IntEnum):
    """Stable ids stored in the header; never renumber, never reuse a retired id."""

    RAW = 0  # fixed-width ceil(log2 K) bits per code, no model
    STATIC = 1  # one integer code-frequency table per run (entropy_static.json)
    PRIOR = 2  # the run's autoregressive prior, integer tables from quantized logits, independent tiles
    PRIOR_OVERLAP = 3  # the same prior over windows that overlap by 2 rows and columns (context)
    GROUPED = 4  # a grouped prior's integer network, in parallel steps (format version 4 on)


class Mode(IntEnum):
    """Channel layout of the original image; alpha is stored losslessly beside the codes."""

    L = 0
    RGB = 1
    LA = 2
    RGBA = 3

    @property
    def channels(self) -> int:
        return (1, 3, 2, 4)[self.value]

    @property
    def color_channels(self) -> int:
        return 1 if self in (Mode.L, Mode.LA) else 3

    @property
    def has_alpha(self) -> bool:
        return self in (Mode.LA, Mode.RGBA)

    @classmethod
    def from_channels(cls, channels: int) -> Mode:
        return {1: cls.L, 3: cls.RGB, 2: cls.LA, 4: cls.RGBA}[channels]


@dataclass(frozen=True)
class Record:
    height: int  # the original image's, which decoding restores
    width: int
    mode: Mode
    codes_length: int
    alpha_length: int = 0
    coded: tuple[int, int] | None = None  # (height, width) the codes describe when not the original's
    stages: int = 1  # n, the stages of a residual VQ run's codes this image holds (version 4 on)

    @property
    def coded_size(self) -> tuple[int, int]:
        """(height, width) of the image the codes were computed from (the grid covers it)."""
        return self.coded if self.coded is not None else (self.height, self.width)

    @property
    def resampled(self) -> bool:
        return self.coded is not None and self.coded != (self.height, self.width)


@dataclass(frozen=True)
class Container:
    entropy_model: EntropyModel
    fingerprint: bytes
    records: tuple[Record, ...]
    payload_offset: int  # where the first image's codes payload starts
    version: int = 1

    def offsets(self) -> list[int]:
        """Byte offset of each image's codes payload: the index that makes images addressable."""
        out, pos = [], self.payload_offset
        for r in self.records:
            out.append(pos)
            pos += r.codes_length + r.alpha_length
        return out

    @property
    def header_bytes(self) -> int:
        return self.payload_offset


def write_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit set on all but the last byte."""
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def crc(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(CRC_BYTES, "little")


def build(
    entropy_model: EntropyModel,
    fingerprint: bytes,
    records: list[Record],
    payloads: list[bytes],
    *,
    version: int = FORMAT_VERSION,
) -> bytes:
    """Assemble a container; ``payloads`` holds, per image, codes followed by alpha (if any).
    ``version`` below the current one writes an older layout (for tests of the readers only)."""
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
    if not 1 <= len(records) <= MAX_IMAGES:
        raise CodecError(f"a .vqk file holds 1 to {MAX_IMAGES} images, got {len(records)}")
    if len(payloads) != len(records):
        raise ValueError(f"{len(payloads)} payloads for {len(records)} records")
    if (
        (version < 2 and any(r.resampled for r in records))
        or (version < STAGE_COUNTS and any(r.stages != 1 for r in records))
        or not 1 <= version <= FORMAT_VERSION
        or (entropy_model is EntropyModel.GROUPED and version < GROUPED_SINCE)
    ):
        raise ValueError(f"cannot write these records in format version {version}")
    compact = version >= COMPACT
    per_part = CHECKSUMS <= version < COMPACT  # versions 3 and 4: a CRC per payload and one for the header
    head = bytearray(MAGIC + bytes([version, int(entropy_model)]))
    if compact:  # the file checksum goes here (FILE_CRC_AT), filled in below
        head += bytes(CRC_BYTES)
    head += fingerprint
    head += write_varint(len(records))
    for r, payload in zip(records, payloads, strict=True):
        if len(payload) != r.codes_length + r.alpha_length:
            raise ValueError(
                f"payload of {len(payload)} bytes for a record of {r.codes_length} + {r.alpha_length}"
            )
        check_size(r.height, r.width, "image")
        if not 1 <= r.stages <= MAX_STAGES:
            raise CodecError(f"an image holds 1 to {MAX_STAGES} stages of codes, got {r.stages}")
        staged = compact and r.stages != 1
        head += write_varint(r.height) + write_varint(r.width)
        head += bytes([int(r.mode) | (RESAMPLED if r.resampled else 0) | (STAGED if staged else 0)])
        if r.resampled:
            check_size(*r.coded_size, "coded image")
            head += write_varint(r.coded_size[0]) + write_varint(r.coded_size[1])
        if staged or STAGE_COUNTS <= version < COMPACT:
            head += write_varint(r.stages)
        head += write_varint(r.codes_length)
        if r.mode.has_alpha:
            head += write_varint(r.alpha_length)
        if per_part:
            head += crc(payload)
    body = b"".join(payloads)
    if per_part:
        head += crc(bytes(head))
    elif compact:
        at = FILE_CRC_AT
        head[at : at + CRC_BYTES] = _file_crc(bytes(head) + body)
    return bytes(head) + body


def _file_crc(data: bytes) -> bytes:
    """Version 5's file checksum: CRC-32 of every byte of the file but the 4 at FILE_CRC_AT."""
    at = FILE_CRC_AT
    value = zlib.crc32(data[at + CRC_BYTES :], zlib.crc32(data[:at]))
    return value.to_bytes(CRC_BYTES, "little")


def check_size(height: int, width: int, what: str) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS):
        raise CodecError(
            f"{what} is {height}x{width}; .vqk supports 1 to {MAX_SIDE} pixels a side and at most "
            f"{MAX_PIXELS} pixels"
        )


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def fail(self, message: str) -> CodecError:
        return CodecError(f"{self.name}: {message}")

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise self.fail(f"truncated: {what} needs {n} bytes, {self.left} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str, limit: int) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            b = self.byte(what)
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if i and b == 0:
                    raise self.fail(f"corrupt: {what} is not minimally encoded")
                if value > limit:
                    raise self.fail(f"corrupt: {what} = {value} exceeds the limit {limit}")
                return value
        raise self.fail(f"corrupt: {what} runs past {MAX_VARINT_BYTES} bytes")

    def length(self, what: str) -> int:
        """A payload length: it can never exceed the bytes left in the file."""
        value = self.varint(f"{what} length", 1 << 34)
        if value > self.left:
            raise self.fail(f"truncated: {what} needs {value} bytes, only {self.left} remain")
        return value


def parse(data: bytes, name: str = "input") -> Container:
    """Read and validate the header and the index; raise CodecError on anything malformed."""
    r = _Reader(data, name)
    if data[: len(MAGIC)] != MAGIC:
        raise CodecError(f"{name} is not a .vqk file (it does not start with {MAGIC!r})")
    r.pos = len(MAGIC)
    version = r.byte("format version")
    if version > FORMAT_VERSION:
        raise r.fail(f"written in .vqk format version {version}; this vqkit reads up to {FORMAT_VERSION}")
    if version < 1:
        raise r.fail(f"corrupt: format version {version} does not exist")
    entropy_id = r.byte("entropy model id")
    try:
        entropy_model = EntropyModel(entropy_id)
    except ValueError:
        raise r.fail(f"unknown entropy model id {entropy_id} (newer vqkit, or a corrupt file)") from None
    if entropy_model is EntropyModel.GROUPED and version < GROUPED_SINCE:
        raise r.fail(f"corrupt: entropy model {entropy_id} does not exist in format version {version}")
    stored_crc = r.take(CRC_BYTES, "file checksum") if version >= COMPACT else b""
    fingerprint = r.take(FINGERPRINT_BYTES, "model fingerprint")
    per_part = CHECKSUMS <= version < COMPACT  # versions 3 and 4: a CRC per payload and one for the header
    # Every record takes at least 4 bytes, so the count is bounded by what remains before allocating.
    count = r.varint("image count", min(MAX_IMAGES, r.left // 4))
    if count == 0:
        raise r.fail("corrupt: image count is 0")
    records: list[Record] = []
    checksums: list[bytes] = []
    for i in range(count):
        height = r.varint(f"image {i} height", MAX_SIDE)
        width = r.varint(f"image {i} width", MAX_SIDE)
        if height == 0 or width == 0 or height * width > MAX_PIXELS:
            raise r.fail(f"corrupt: image {i} is {height}x{width}")
        mode_id = r.byte(f"image {i} mode")
        flags = mode_id & ((RESAMPLED | STAGED) if version >= COMPACT else RESAMPLED if version >= 2 else 0)
        if mode_id ^ flags > max(Mode):
            raise r.fail(f"corrupt: image {i} has unknown mode {mode_id}")
        mode = Mode(mode_id ^ flags)
        coded = None
        if flags & RESAMPLED:
            coded = (
                r.varint(f"image {i} coded height", MAX_SIDE),
                r.varint(f"image {i} coded width", MAX_SIDE),
            )
            if 0 in coded or coded[0] * coded[1] > MAX_PIXELS:
                raise r.fail(f"corrupt: image {i} is coded at {coded[0]}x{coded[1]}")
        stages = 1
        if flags & STAGED or STAGE_COUNTS <= version < COMPACT:
            stages = r.varint(f"image {i} stage count", MAX_STAGES)
            if stages == 0:
                raise r.fail(f"corrupt: image {i} holds 0 stages of codes")
            if flags & STAGED and stages == 1:  # one stage is written as no count: one form per file
                raise r.fail(f"corrupt: image {i} has a stage count of 1 behind the STAGED flag")
        codes_length = r.length(f"image {i} codes")
        alpha_length = r.length(f"image {i} alpha") if mode.has_alpha else 0
        records.append(Record(height, width, mode, codes_length, alpha_length, coded, stages))
        if per_part:
            checksums.append(r.take(CRC_BYTES, f"image {i} checksum"))
    end = r.pos
    if per_part:
        if r.take(CRC_BYTES, "header checksum") != crc(data[:end]):
            raise r.fail("corrupt: the header checksum does not match (the file is damaged)")
    elif version >= COMPACT and stored_crc != _file_crc(data):
        raise r.fail("corrupt: the file checksum does not match (the file is damaged)")
    payload_offset = r.pos
    total = sum(rec.codes_length + rec.alpha_length for rec in records)
    if total > r.left:
        raise r.fail(f"truncated: the index promises {total} payload bytes, {r.left} are present")
    if total < r.left:
        raise r.fail(f"corrupt: {r.left - total} unexpected bytes after the last payload")
    container = Container(entropy_model, fingerprint, tuple(records), payload_offset, version)
    for i, (expected, offset, rec) in enumerate(zip(checksums, container.offsets(), records, strict=False)):
        if crc(data[offset : offset + rec.codes_length + rec.alpha_length]) != expected:
            raise r.fail(f"corrupt: image {i}'s payload checksum does not match (the file is damaged)")
    return container
