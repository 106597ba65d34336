"""TFRecord framing: CRCs, gzip, corruption errors, skip mode, TensorFlow compatibility."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from womd_helpers import REAL_SCENARIO_FILE, real_record_bytes  # noqa: E402

from smart_r1.data.tfrecord import (  # noqa: E402
    ReadStats,
    TFRecordCorruptError,
    encode_record,
    expand_paths,
    iter_records,
    masked_crc32c,
    write_records,
)

PAYLOADS = [b"", b"a", b"hello world" * 100, bytes(range(256)) * 50]


def _offsets(payloads):
    out, off = [], 0
    for p in payloads:
        out.append(off)
        off += 16 + len(p)
    return out


def test_masked_crc_known_value():
    # crc32c("123456789") = 0xE3069283 (standard check value); mask it by hand.
    crc = 0xE3069283
    expected = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == expected


def test_real_file_reads_one_record():
    refs = list(iter_records(REAL_SCENARIO_FILE))
    assert len(refs) == 1
    assert refs[0].index == 0 and refs[0].offset == 0 and refs[0].path == str(REAL_SCENARIO_FILE)
    assert len(refs[0].data) == REAL_SCENARIO_FILE.stat().st_size - 16


def test_write_then_read_byte_identical(tmp_path):
    p = tmp_path / "x.tfrecord"
    assert write_records(p, PAYLOADS) == len(PAYLOADS)
    refs = list(iter_records(p))
    assert [r.data for r in refs] == PAYLOADS
    assert [r.index for r in refs] == list(range(len(PAYLOADS)))
    assert [r.offset for r in refs] == _offsets(PAYLOADS)
    assert p.read_bytes() == b"".join(encode_record(x) for x in PAYLOADS)
    # Rewriting the real file's record gives the real file byte for byte.
    q = tmp_path / "real.tfrecord"
    write_records(q, [real_record_bytes()])
    assert q.read_bytes() == REAL_SCENARIO_FILE.read_bytes()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files left


def test_gzip_by_suffix_and_by_magic(tmp_path):
    gz = tmp_path / "x.tfrecord.gz"
    write_records(gz, PAYLOADS)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(gz.read_bytes()) == b"".join(encode_record(x) for x in PAYLOADS)
    # Compressed file without a .gz name: detected by its magic bytes.
    odd = tmp_path / "y.tfrecord"
    write_records(odd, PAYLOADS, compress=True)
    assert [r.data for r in iter_records(odd)] == PAYLOADS
    assert [r.data for r in iter_records(gz)] == PAYLOADS


def test_expand_paths_globs_lists_commas(tmp_path):
    for name in ["b.tfrecord", "a.tfrecord", "c.tfrecord.gz"]:
        write_records(tmp_path / name, [b"x"])
    a, b, c = (str(tmp_path / n) for n in ["a.tfrecord", "b.tfrecord", "c.tfrecord.gz"])
    assert expand_paths(str(tmp_path / "*.tfrecord")) == [a, b]
    assert expand_paths(f"{b},{a}") == [b, a]
    assert expand_paths([Path(c), str(tmp_path / "*.tfrecord")]) == [c, a, b]
    assert expand_paths(tmp_path) == [a, b, c]
    with pytest.raises(FileNotFoundError, match="no files match"):
        expand_paths(str(tmp_path / "*.nothing"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_paths(str(tmp_path / "missing.tfrecord"))
    st = ReadStats()
    assert len(list(iter_records(str(tmp_path / "*"), stats=st))) == 3 and st.files == 3


def test_flipped_data_byte_names_file_index_offset(tmp_path):
    p = tmp_path / "bad.tfrecord"
    write_records(p, PAYLOADS)
    raw = bytearray(p.read_bytes())
    offs = _offsets(PAYLOADS)
    raw[offs[2] + 12 + 5] ^= 0x01  # a byte inside record 2's data
    p.write_bytes(bytes(raw))
    with pytest.raises(TFRecordCorruptError) as ei:
        list(iter_records(p))
    err = ei.value
    assert (err.path, err.index, err.offset) == (str(p), 2, offs[2])
    assert "data CRC mismatch" in str(err) and str(p) in str(err) and "record 2" in str(err)
    assert f"byte offset {offs[2]}" in str(err)
    # Skip mode: record 2 is skipped and counted, record 3 still arrives.
    st = ReadStats()
    got = [r.data for r in iter_records(p, skip_corrupt=True, stats=st)]
    assert got == [PAYLOADS[0], PAYLOADS[1], PAYLOADS[3]]
    assert st.skipped == 1 and st.records == 3 and st.files_abandoned == 0


def test_truncated_last_record(tmp_path):
    p = tmp_path / "trunc.tfrecord"
    write_records(p, PAYLOADS)
    raw = p.read_bytes()
    p.write_bytes(raw[:-10])
    offs = _offsets(PAYLOADS)
    with pytest.raises(TFRecordCorruptError, match="truncated data") as ei:
        list(iter_records(p))
    assert ei.value.index == 3 and ei.value.offset == offs[3]
    st = ReadStats()
    assert [r.data for r in iter_records(p, skip_corrupt=True, stats=st)] == PAYLOADS[:3]
    assert st.skipped == 1 and st.files_abandoned == 1
    # Truncated inside a header.
    p.write_bytes(raw[: offs[3] + 5])
    with pytest.raises(TFRecordCorruptError, match="truncated header"):
        list(iter_records(p))
    # Truncated inside the final data CRC.
    p.write_bytes(raw[:-2])
    with pytest.raises(TFRecordCorruptError, match="truncated data CRC"):
        list(iter_records(p))


def test_bad_length_crc_stops_file_but_not_the_next(tmp_path):
    bad = tmp_path / "a.tfrecord"
    good = tmp_path / "b.tfrecord"
    write_records(bad, PAYLOADS)
    write_records(good, [b"next file"])
    raw = bytearray(bad.read_bytes())
    offs = _offsets(PAYLOADS)
    raw[offs[1] + 9] ^= 0xFF  # inside record 1's length CRC
    bad.write_bytes(bytes(raw))
    with pytest.raises(TFRecordCorruptError, match="length CRC mismatch") as ei:
        list(iter_records([bad, good]))
    assert ei.value.index == 1 and ei.value.offset == offs[1]
    st = ReadStats()
    got = [r.data for r in iter_records([bad, good], skip_corrupt=True, stats=st)]
    assert got == [PAYLOADS[0], b"next file"]
    assert st.skipped == 1 and st.files_abandoned == 1 and st.files == 2
    assert "length CRC" in st.errors[0]


def test_corrupt_gzip_stream(tmp_path):
    p = tmp_path / "x.tfrecord.gz"
    write_records(p, PAYLOADS)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TFRecordCorruptError, match=str(p).replace(".", r"\.")):
        list(iter_records(p))
    st = ReadStats()
    list(iter_records(p, skip_corrupt=True, stats=st))
    assert st.skipped == 1


def test_write_is_atomic_on_error(tmp_path):
    p = tmp_path / "x.tfrecord"
    write_records(p, [b"old"])

    def gen():
        yield b"new"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_records(p, gen())
    assert [r.data for r in iter_records(p)] == [b"old"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.tfrecord"]
    with pytest.raises(TypeError, match="record 0"):
        write_records(tmp_path / "y.tfrecord", ["not bytes"])  # type: ignore[list-item]


def test_tensorflow_reads_our_files_and_we_read_its(tmp_path):
    import tensorflow as tf
    plain, gz = tmp_path / "x.tfrecord", tmp_path / "x.tfrecord.gz"
    write_records(plain, PAYLOADS)
    write_records(gz, PAYLOADS)
    assert [bytes(x.numpy()) for x in tf.data.TFRecordDataset(str(plain))] == PAYLOADS
    assert [bytes(x.numpy()) for x in tf.data.TFRecordDataset(str(gz), compression_type="GZIP")] == PAYLOADS
    theirs = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for x in PAYLOADS:
            w.write(x)
    assert theirs.read_bytes() == plain.read_bytes()
    assert [r.data for r in iter_records(theirs)] == PAYLOADS
    # The real 950 kB scenario as well.
    real = tmp_path / "real.tfrecord"
    write_records(real, [real_record_bytes()])
    assert [bytes(x.numpy()) for x in tf.data.TFRecordDataset(str(real))] == [real_record_bytes()]


def test_header_layout():
    rec = encode_record(b"abc")
    length, lcrc = struct.unpack("<QI", rec[:12])
    assert length == 3 and lcrc == masked_crc32c(rec[:8])
    assert rec[12:15] == b"abc" and struct.unpack("<I", rec[15:])[0] == masked_crc32c(b"abc")
