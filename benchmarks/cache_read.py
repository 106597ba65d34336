"""Seconds per scene: parsing from TFRecord (read + CRC + proto parse + convert) vs the Parquet cache.

    python -m benchmarks.cache_read [--scenes 24] [--repeats 3] [--input GLOB]

Default input: copies of the real WOMD scenario (83 agents, 301 map features, ~950 kB) with
distinct scenario ids, 4 per shard. Target: reading a cached scene >= 10x faster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "fixtures" / "womd" / "scenario_637f20cafde22ff8.tfrecord"


def _make_inputs(out: Path, n_scenes: int, per_shard: int = 4) -> str:
    from waymo_open_dataset.protos import scenario_pb2

    from smart_r1.data.tfrecord import iter_records, write_records

    (data,) = [r.data for r in iter_records(REAL)]
    proto = scenario_pb2.Scenario.FromString(data)
    recs = []
    for i in range(n_scenes):
        proto.scenario_id = f"bench{i:05d}"
        recs.append(proto.SerializeToString())
    for s in range(0, n_scenes, per_shard):
        write_records(out / f"bench-{s // per_shard:05d}.tfrecord", recs[s : s + per_shard])
    return str(out / "*.tfrecord")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3, help="best of N passes")
    ap.add_argument("--input", default=None, help="TFRecord glob (default: copies of the real scenario)")
    args = ap.parse_args(argv)

    from smart_r1.data.cache import SceneCache, SceneDataset, preprocess
    from smart_r1.data.scenario_io import iter_scenes

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.input is None:
            (tmp / "in").mkdir()
            spec = _make_inputs(tmp / "in", args.scenes)
        else:
            spec = args.input

        def tfrecord_pass() -> tuple[float, int]:
            t0 = time.perf_counter()
            n = sum(1 for _ in iter_scenes(spec))
            return time.perf_counter() - t0, n

        tf_times = []
        for _ in range(args.repeats):
            dt, n = tfrecord_pass()
            tf_times.append(dt / n)

        t0 = time.perf_counter()
        preprocess(spec, tmp / "cache", num_workers=0, progress=False)
        build_s = time.perf_counter() - t0
        cache = SceneCache(tmp / "cache")
        assert len(cache) == n
        seq, rnd = [], []
        ds = SceneDataset(cache)
        for r in range(args.repeats):
            t0 = time.perf_counter()
            m = sum(1 for _ in cache)
            seq.append((time.perf_counter() - t0) / m)
            order = ds.order(shuffle=True, seed=r)
            t0 = time.perf_counter()
            for i in order:
                ds[int(i)]
            rnd.append((time.perf_counter() - t0) / len(order))
        size_tf = sum(os.path.getsize(p) for p in (tmp / "in").glob("*")) if args.input is None else None
        size_pq = sum(os.path.getsize(p) for p in (tmp / "cache").glob("*.parquet"))

    res = {
        "scenes": n,
        "tfrecord_s_per_scene": min(tf_times),
        "cache_random_s_per_scene": min(rnd),
        "cache_sequential_s_per_scene": min(seq),
        "preprocess_in_process_s_per_scene": build_s / n,
        "speedup_random": min(tf_times) / min(rnd),
        "speedup_sequential": min(tf_times) / min(seq),
        "tfrecord_bytes_per_scene": (size_tf / n) if size_tf else None,
        "parquet_bytes_per_scene": size_pq / n,
    }
    print(f"scenes: {n} (best of {args.repeats} passes; cpu_count={os.cpu_count()})")
    print(f"TFRecord read+parse+convert : {res['tfrecord_s_per_scene'] * 1e3:8.2f} ms/scene")
    print(f"cache, random access ds[i]  : {res['cache_random_s_per_scene'] * 1e3:8.2f} ms/scene "
          f"({res['speedup_random']:.1f}x faster)")
    print(f"cache, sequential iteration : {res['cache_sequential_s_per_scene'] * 1e3:8.2f} ms/scene "
          f"({res['speedup_sequential']:.1f}x faster)")
    print(f"preprocess (in-process)     : {res['preprocess_in_process_s_per_scene'] * 1e3:8.2f} ms/scene")
    if res["tfrecord_bytes_per_scene"]:
        print(f"size: TFRecord {res['tfrecord_bytes_per_scene'] / 1e6:.2f} MB/scene, "
              f"Parquet {res['parquet_bytes_per_scene'] / 1e6:.2f} MB/scene")
    return res


if __name__ == "__main__":
    main()
