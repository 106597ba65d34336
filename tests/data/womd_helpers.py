"""Helpers for the data tests: copies of the real WOMD scenario, corrupted files."""

from __future__ import annotations

from pathlib import Path

from smart_r1.data.tfrecord import iter_records, write_records

REPO = Path(__file__).resolve().parents[2]
REAL_SCENARIO_FILE = REPO / "tests" / "fixtures" / "womd" / "scenario_637f20cafde22ff8.tfrecord"
REAL_SCENARIO_ID = "637f20cafde22ff8"

_REAL_BYTES: bytes | None = None


def real_record_bytes() -> bytes:
    """Serialized Scenario of the real fixture (read once)."""
    global _REAL_BYTES
    if _REAL_BYTES is None:
        (_REAL_BYTES,) = [r.data for r in iter_records(REAL_SCENARIO_FILE)]
    return _REAL_BYTES


def real_scenario():
    from waymo_open_dataset.protos import scenario_pb2

    return scenario_pb2.Scenario.FromString(real_record_bytes())


def scenario_copies(n: int, prefix: str = "copy") -> list[bytes]:
    """`n` serialized copies of the real scenario with scenario_id `{prefix}{i:04d}`."""
    proto = real_scenario()
    out = []
    for i in range(n):
        proto.scenario_id = f"{prefix}{i:04d}"
        out.append(proto.SerializeToString())
    return out


def write_copies(out_dir: Path, n_shards: int, per_shard: int, prefix: str = "copy") -> list[Path]:
    """Shards `shard-XXXXX-of-YYYYY.tfrecord` of real-scenario copies with unique ids."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = scenario_copies(n_shards * per_shard, prefix)
    paths = []
    for s in range(n_shards):
        p = out_dir / f"shard-{s:05d}-of-{n_shards:05d}.tfrecord"
        write_records(p, records[s * per_shard : (s + 1) * per_shard])
        paths.append(p)
    return paths
