"""Streaming TFRecord reader/writer with CRC32C checks; no TensorFlow needed.

Record framing (TensorFlow's `TFRecord` format, little-endian):

    uint64  length
    uint32  masked_crc32c(length bytes)
    bytes   data[length]
    uint32  masked_crc32c(data)

with `masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8  (mod 2**32)`.

Files may be plain or gzip-compressed (detected by the gzip magic bytes; `write_records`
compresses when the name ends in `.gz` unless told otherwise). Byte offsets reported for a
gzip file are offsets in the *uncompressed* record stream.

Entry points: `iter_records(paths)`, `write_records(path, records)`, `expand_paths(spec)`.
"""

from __future__ import annotations

import glob
import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence, Union

import crc32c as _crc32c

from smart_r1.data.atomic import atomic_output
from smart_r1.errors import InputError

__all__ = [
    "RecordRef",
    "ReadStats",
    "TFRecordCorruptError",
    "encode_record",
    "expand_paths",
    "iter_file_records",
    "iter_records",
    "looks_like_tfrecord",
    "masked_crc32c",
    "write_records",
]

_MASK_DELTA = 0xA282EAD8
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER = struct.Struct("<QI")  # length, masked crc of length
_FOOTER = struct.Struct("<I")  # masked crc of data
_GLOB_CHARS = set("*?[")

PathSpec = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of `data`."""
    crc = _crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """One framed TFRecord record holding `data`."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class TFRecordCorruptError(InputError):
    """A record that fails framing: names the file, the record index, the byte offset and what is wrong."""

    def __init__(self, path: str, index: int, offset: int, reason: str):
        self.path = str(path)
        self.index = int(index)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f"{self.path}: record {self.index} at byte offset {self.offset}: {reason}")


@dataclass(frozen=True)
class RecordRef:
    """One record's payload and where it came from (`offset`: byte offset of its header)."""

    data: bytes
    path: str
    index: int
    offset: int


@dataclass
class ReadStats:
    """Counts kept while reading; `skipped` lists one message per skipped record / abandoned file tail."""

    files: int = 0
    records: int = 0  # good records yielded
    bytes: int = 0  # payload bytes yielded
    skipped: int = 0  # corrupt records skipped (skip_corrupt mode)
    files_abandoned: int = 0  # files whose tail could not be read (bad length CRC, truncation, bad gzip)
    not_scenario: int = 0  # of `skipped`: records that framed fine but are not a Scenario (scenario_io)
    invalid: int = 0  # of `skipped`: scenes that failed validation (scenario_io, validate=True)
    missing_map: int = 0  # scenes read that have no map features (allowed, counted)
    errors: list[str] = field(default_factory=list)

    def record_skip(self, err: Exception, abandon_file: bool = False) -> None:
        self.skipped += 1
        if abandon_file:
            self.files_abandoned += 1
        self.errors.append(str(err))

    def merge(self, other: "ReadStats") -> "ReadStats":
        self.files += other.files
        self.records += other.records
        self.bytes += other.bytes
        self.skipped += other.skipped
        self.files_abandoned += other.files_abandoned
        self.not_scenario += other.not_scenario
        self.invalid += other.invalid
        self.missing_map += other.missing_map
        self.errors.extend(other.errors)
        return self

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "records": self.records,
            "bytes": self.bytes,
            "skipped": self.skipped,
            "files_abandoned": self.files_abandoned,
            "not_scenario": self.not_scenario,
            "invalid": self.invalid,
            "missing_map": self.missing_map,
            "errors": list(self.errors),
        }

    def summary(self) -> str:
        extra = []
        if self.files_abandoned:
            extra.append(f"{self.files_abandoned} files abandoned at a corrupt record")
        if self.not_scenario:
            extra.append(f"{self.not_scenario} not a Scenario")
        if self.invalid:
            extra.append(f"{self.invalid} failed validation")
        text = f"{self.records} records read from {self.files} files, {self.skipped} corrupt records skipped"
        text += f" ({'; '.join(extra)})" if extra else ""
        if self.missing_map:
            text += f"; {self.missing_map} scenes without map features"
        return text


# ----------------------------------------------------------------------------- paths
def _has_glob(s: str) -> bool:
    return any(c in s for c in _GLOB_CHARS)


def expand_paths(spec: PathSpec) -> list[str]:
    """Paths from a path, a glob, a comma-separated string of those, a directory, or a list of any.

    Globs expand sorted; a directory means its regular files (sorted). A literal path or a
    glob that matches nothing raises `FileNotFoundError`. Duplicates keep their first place.
    """
    if isinstance(spec, (str, os.PathLike)):
        items: list = [spec]
    else:
        items = list(spec)
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        parts = [p.strip() for p in text.split(",")] if isinstance(item, str) and "," in text else [text]
        for part in parts:
            if not part:
                continue
            part = os.path.expanduser(part)
            if _has_glob(part):
                matches = sorted(m for m in glob.glob(part, recursive=True) if os.path.isfile(m))
                if not matches:
                    raise FileNotFoundError(f"no files match {part!r}")
                out.extend(matches)
            elif os.path.isdir(part):
                files = sorted(os.path.join(part, n) for n in os.listdir(part) if os.path.isfile(os.path.join(part, n)))
                files = [f for f in files if not os.path.basename(f).startswith(".")]
                if not files:
                    raise FileNotFoundError(f"directory {part!r} holds no files")
                out.extend(files)
            elif os.path.isfile(part):
                out.append(part)
            else:
                raise FileNotFoundError(f"no such file: {part!r}")
    seen: set[str] = set()
    unique = []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


# ----------------------------------------------------------------------------- reading
def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def looks_like_tfrecord(path: str | os.PathLike) -> bool:
    """True if `path` is gzip-compressed or starts with a TFRecord header whose length CRC checks out."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
    if head[:2] == _GZIP_MAGIC:
        return True
    return len(head) == _HEADER.size and masked_crc32c(head[:8]) == _HEADER.unpack(head)[1]


def _open_stream(path: str) -> BinaryIO:
    if _is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb", buffering=1 << 20)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """Read up to n bytes (fewer only at end of stream)."""
    buf = f.read(n)
    if len(buf) == n or not buf:
        return buf
    chunks = [buf]
    got = len(buf)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def iter_file_records(path: str | os.PathLike, skip_corrupt: bool = False, stats: ReadStats | None = None) -> Iterator[RecordRef]:
    """Records of one file, CRC-checked. See `iter_records`."""
    path = os.fspath(path)
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    index = 0
    offset = 0

    def corrupt(reason: str, cause: BaseException | None = None, abandon_file: bool = True) -> None:
        """Raise `TFRecordCorruptError` for the current record, or (skip_corrupt) count it in `stats`."""
        exc = TFRecordCorruptError(path, index, offset, reason)
        if not skip_corrupt:
            if cause is not None:
                raise exc from cause
            raise exc
        stats.record_skip(exc, abandon_file=abandon_file)

    with _open_stream(path) as f:
        while True:
            try:
                header = _read_exact(f, _HEADER.size)
            except (OSError, EOFError, zlib.error) as err:  # bad / truncated gzip stream
                corrupt(f"unreadable compressed stream: {err}", err)
                return
            if not header:
                return
            if len(header) < _HEADER.size:
                corrupt(f"truncated header: {len(header)} of {_HEADER.size} bytes before end of file")
                return
            length, length_crc = _HEADER.unpack(header)
            expected = masked_crc32c(header[:8])
            if length_crc != expected:
                corrupt(
                    f"length CRC mismatch (stored {length_crc:#010x}, computed {expected:#010x}); "
                    "record boundaries after this point are unknown"
                )
                return
            try:
                body = _read_exact(f, length + _FOOTER.size)
            except (OSError, EOFError, zlib.error) as err:
                corrupt(f"unreadable compressed stream: {err}", err)
                return
            if len(body) < length + _FOOTER.size:
                what = "data" if len(body) < length else "data CRC"
                corrupt(
                    f"truncated {what}: record declares {length} data bytes + 4 CRC bytes, "
                    f"only {len(body)} bytes before end of file"
                )
                return
            data = body[:length]
            (data_crc,) = _FOOTER.unpack_from(body, length)
            expected = masked_crc32c(data)
            if data_crc != expected:
                corrupt(f"data CRC mismatch (stored {data_crc:#010x}, computed {expected:#010x})", abandon_file=False)
            else:
                stats.records += 1
                stats.bytes += length
                yield RecordRef(data=data, path=path, index=index, offset=offset)
            index += 1
            offset += _HEADER.size + length + _FOOTER.size


def iter_records(paths: PathSpec, skip_corrupt: bool = False, stats: ReadStats | None = None) -> Iterator[RecordRef]:
    """Stream the records of every file in `paths` (see `expand_paths`), checking both CRCs.

    A corrupt record raises `TFRecordCorruptError` (file, record index, byte offset, reason).
    With `skip_corrupt=True` it is counted in `stats` and reading goes on with the next
    record; after a bad length CRC or a truncation the rest of that file cannot be framed,
    so the reader counts one skip and moves to the next file.
    """
    for path in expand_paths(paths):
        yield from iter_file_records(path, skip_corrupt=skip_corrupt, stats=stats)


# ----------------------------------------------------------------------------- writing
def write_records(path: str | os.PathLike, records: Iterable[bytes], compress: bool | None = None) -> int:
    """Write `records` to `path` atomically (temp file in the same folder, then rename).

    `compress=None` gzips when the name ends in `.gz`. Returns the number of records written.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    n = 0
    with atomic_output(path) as tmp, open(tmp, "wb", buffering=1 << 20) as raw:
        sink: BinaryIO
        if compress:
            # mtime=0: the same records give the same bytes.
            sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)  # type: ignore[assignment]
        else:
            sink = raw
        for data in records:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"{path}: record {n} is {type(data).__name__}, expected bytes")
            sink.write(encode_record(bytes(data)))
            n += 1
        if compress:
            sink.close()
    return n
