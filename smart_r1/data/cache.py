"""Scene cache: Scenario TFRecord shards -> Parquet shards of `Scene`s, and a dataset reading them.

Layout of a cache directory:

    CACHE_DIR/
      manifest.json                         # inputs (path, size, mtime), outputs, scene/skip counts
      <input-stem>-<hash8>.parquet          # one Parquet shard per input shard

Arrow encoding (one row per scene; `SCHEMA_VERSION` below):
- every numpy array field of `Scene`, `Scene.map` (`MapData`) and `Scene.signals`
  (`TrafficSignals`) is one `binary` column holding the array's raw C-order bytes, named by
  its attribute path (`agent_states`, `map.points`, `signals.state`, ...); an optional array
  that is None is a null;
- the `layout` column (JSON string) gives each array's dtype and shape
  (`{"agent_states": ["<f4", [83, 91, 9]], ...}`), so decoding is `np.frombuffer(...).reshape(...)`
  and the round trip is bit-exact for any dtype (NaN payloads included);
- scalar fields (`scenario_id`, `source`, `current_time_index`, `sdc_index`) are plain columns.
The columns follow the dataclass fields, so additive fields of the shared types are cached
automatically. Row groups hold `ROWS_PER_GROUP` scenes (1: a scene is read by index without
touching its neighbours); columns are uncompressed (float blobs barely compress, and decoding
speed is the point of the cache).

Shards are written atomically (temp file + rename) and carry their input's path, size and
mtime in the Parquet key-value metadata, so `preprocess` re-run on the same inputs skips
finished shards; a killed run loses only the shards that were in flight. Preprocessing runs
one Ray task per input shard (Ray is imported only inside `preprocess`).

Reading: `SceneCache(dir)[i] -> Scene`; `SceneDataset` adds seeded shuffling and batching and
works as a map-style dataset for `torch.utils.data.DataLoader` (`collate_scenes` keeps a
batch as `list[Scene]`; `make_dataloader` wires both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from smart_r1.data.atomic import atomic_output
from smart_r1.data.scene import MapData, Scene, TrafficSignals
from smart_r1.errors import EmptyInputError, InputError

__all__ = [
    "MANIFEST_NAME",
    "PreprocessError",
    "SceneCache",
    "SceneDataset",
    "collate_scenes",
    "convert_shard",
    "make_dataloader",
    "preprocess",
    "read_cache_shard",
    "scenes_to_table",
    "table_to_scenes",
    "write_cache_shard",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
ROWS_PER_GROUP = 1
_META_PREFIX = b"smart_r1."
_TMP_MARK = ".smart_r1-tmp-"


class PreprocessError(InputError, RuntimeError):
    """An input shard could not be converted; names the input file and the cause."""


# ----------------------------------------------------------------------------- Scene <-> Arrow
_NESTED = {"MapData": MapData, "TrafficSignals": TrafficSignals}
_SCALARS = {"str": "string", "int": "int64", "float": "float64", "bool": "bool"}


@dataclass(frozen=True)
class _Col:
    name: str  # column name = attribute path ("map.points")
    kind: str  # "array" or a scalar kind from _SCALARS


def _columns(cls=Scene, prefix: str = "") -> list[_Col]:
    out: list[_Col] = []
    for f in dataclasses.fields(cls):
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        ann = ann.replace(" ", "").strip("'\"")
        name = prefix + f.name
        if ann in _NESTED:
            out.extend(_columns(_NESTED[ann], name + "."))
        elif ann.startswith("np.ndarray") or ann.startswith("numpy.ndarray"):
            out.append(_Col(name, "array"))
        elif ann in _SCALARS:
            out.append(_Col(name, ann))
        else:
            raise TypeError(f"scene cache cannot store field {name!r} of type {ann!r}")
    return out


_COLUMNS = _columns()


def _schema():
    import pyarrow as pa

    fields = []
    for c in _COLUMNS:
        if c.kind == "array":
            fields.append(pa.field(c.name, pa.binary(), nullable=True))
        else:
            fields.append(pa.field(c.name, getattr(pa, _SCALARS[c.kind])(), nullable=False))
    fields.append(pa.field("layout", pa.string(), nullable=False))
    return pa.schema(fields)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def scenes_to_table(scenes: Sequence[Scene]):
    """Scenes -> `pyarrow.Table`, one row per scene (see the module docstring)."""
    import pyarrow as pa

    cols: dict[str, list] = {c.name: [] for c in _COLUMNS}
    layouts: list[str] = []
    for scene in scenes:
        layout: dict[str, Any] = {}
        for c in _COLUMNS:
            value = _get(scene, c.name)
            if c.kind != "array":
                cols[c.name].append(value)
                continue
            if value is None:
                cols[c.name].append(None)
                continue
            arr = np.ascontiguousarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"scene {scene.scenario_id!r}: field {c.name} holds Python objects, cannot cache")
            layout[c.name] = [arr.dtype.str, list(arr.shape)]
            cols[c.name].append(arr.tobytes())
        layouts.append(json.dumps(layout, separators=(",", ":")))
    schema = _schema()
    arrays = [pa.array(cols[c.name], type=schema.field(c.name).type) for c in _COLUMNS]
    arrays.append(pa.array(layouts, type=pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema)


def _set_nested(kwargs: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    d = kwargs
    for part in parts[:-1]:
        d = d.setdefault(part, {})
    d[parts[-1]] = value


def _decode_rows(table, rows: Sequence[int], where: str = "") -> list[Scene]:
    """Decode the given rows of an Arrow table written by `scenes_to_table`."""
    names = set(table.column_names)
    missing = [c.name for c in _COLUMNS if c.name not in names]
    required_missing = [m for m in missing if not _has_default(m)]
    if "layout" not in names or required_missing:
        raise ValueError(
            f"{where or 'table'}: not a scene cache of this version (missing columns "
            f"{required_missing or ['layout']}); re-run `smart-r1 data preprocess`"
        )
    chunks = {name: table.column(name).combine_chunks() if table.column(name).num_chunks != 1 else table.column(name).chunk(0) for name in names}
    out = []
    for r in rows:
        layout = json.loads(chunks["layout"][r].as_py())
        kwargs: dict[str, Any] = {}
        for c in _COLUMNS:
            if c.name not in names:
                continue
            cell = chunks[c.name][r]
            if c.kind != "array":
                _set_nested(kwargs, c.name, cell.as_py())
                continue
            if not cell.is_valid:
                _set_nested(kwargs, c.name, None)
                continue
            dtype, shape = layout[c.name]
            buf = cell.as_buffer()
            arr = np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape).copy()  # writable, aligned
            _set_nested(kwargs, c.name, arr)
        kwargs["map"] = MapData(**kwargs["map"])
        kwargs["signals"] = TrafficSignals(**kwargs["signals"])
        out.append(Scene(**kwargs))
    return out


def _has_default(path: str) -> bool:
    cls: Any = Scene
    parts = path.split(".")
    for part in parts[:-1]:
        cls = _NESTED[{f.name: f.type for f in dataclasses.fields(cls)}[part].strip("'\"")]
    f = {f.name: f for f in dataclasses.fields(cls)}[parts[-1]]
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def table_to_scenes(table) -> list[Scene]:
    """Inverse of `scenes_to_table`."""
    return _decode_rows(table, range(table.num_rows))


# ----------------------------------------------------------------------------- Parquet shards
def write_cache_shard(path: str | os.PathLike, scenes: Sequence[Scene], metadata: dict | None = None) -> Path:
    """Write scenes to one Parquet shard atomically. `metadata` (JSON-able) goes into the footer."""
    import pyarrow.parquet as pq

    path = Path(path)
    table = scenes_to_table(scenes)
    meta = {b"smart_r1.schema_version": str(SCHEMA_VERSION).encode()}
    for k, v in (metadata or {}).items():
        meta[_META_PREFIX + k.encode()] = json.dumps(v).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with atomic_output(path, prefix=f".{path.name}{_TMP_MARK}", suffix="") as tmp:
        pq.write_table(
            table,
            tmp,
            row_group_size=ROWS_PER_GROUP,
            compression="none",
            use_dictionary=False,
            write_statistics=False,
        )
    return path


def shard_metadata(path: str | os.PathLike) -> dict:
    """The smart_r1 key-value metadata of a cache shard (footer only)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in meta.items():
        if k.startswith(_META_PREFIX):
            key = k[len(_META_PREFIX) :].decode()
            try:
                out[key] = json.loads(v)
            except ValueError:
                out[key] = v.decode()
    return out


def read_cache_shard(path: str | os.PathLike) -> list[Scene]:
    """All scenes of one cache shard."""
    import pyarrow.parquet as pq

    return _decode_rows(pq.read_table(path, memory_map=True), range(pq.ParquetFile(path).metadata.num_rows), str(path))


# ----------------------------------------------------------------------------- preprocess
def _input_fingerprint(path: str) -> dict:
    st = os.stat(path)
    return {"input_path": os.path.abspath(path), "input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def output_name(input_path: str) -> str:
    """Cache shard name for an input shard: its name (minus TFRecord/gzip suffixes) + a hash of its path."""
    base = os.path.basename(input_path)
    for suffix in (".gz", ".tfrecord", ".tfrecords"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    digest = hashlib.sha1(os.path.abspath(input_path).encode()).hexdigest()[:8]
    return f"{base}-{digest}.parquet"


def convert_shard(input_path: str, output_path: str, skip_corrupt: bool = False, validate: bool = False) -> dict:
    """One input TFRecord shard -> one Parquet cache shard (atomic). Returns its manifest entry."""
    from smart_r1.data.scenario_io import iter_scenes
    from smart_r1.data.tfrecord import ReadStats

    t0 = time.perf_counter()
    fp = _input_fingerprint(input_path)
    stats = ReadStats()
    scenes = list(iter_scenes(input_path, skip_corrupt=skip_corrupt, validate=validate, stats=stats))
    ids = [s.scenario_id for s in scenes]
    entry = {
        **fp,
        "output": os.path.basename(output_path),
        "n_scenes": len(scenes),
        "records": stats.records,
        "skipped": stats.skipped,
        "not_scenario": stats.not_scenario,
        "invalid": stats.invalid,
        "missing_map": stats.missing_map,
        "errors": stats.errors[:20],
    }
    write_cache_shard(output_path, scenes, metadata={**entry, "scenario_ids": ids})
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry


def _finished_entry(input_path: str, output_path: Path) -> dict | None:
    """Manifest entry of an already finished shard for this exact input, else None."""
    if not output_path.exists():
        return None
    try:
        meta = shard_metadata(output_path)
    except Exception:  # unreadable / foreign file: redo it
        return None
    fp = _input_fingerprint(input_path)
    if meta.get("schema_version") != SCHEMA_VERSION and str(meta.get("schema_version")) != str(SCHEMA_VERSION):
        return None
    if any(meta.get(k) != v for k, v in fp.items()):
        return None
    return {k: v for k, v in meta.items() if k not in ("scenario_ids", "schema_version")}


def _write_manifest(out_dir: Path, entries: list[dict], inputs: list[str], extra: dict) -> dict:
    done = [e for e in entries if e is not None]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "updated_unix": time.time(),
        "complete": len(done) == len(inputs),
        "n_inputs": len(inputs),
        "n_shards_done": len(done),
        "n_scenes": sum(e["n_scenes"] for e in done),
        "n_skipped": sum(e["skipped"] for e in done),
        "shards": done,
        **extra,
    }
    with atomic_output(out_dir / MANIFEST_NAME, prefix=f".{MANIFEST_NAME}{_TMP_MARK}", suffix="", fsync=False) as tmp:
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
    return manifest


def _init_ray(address: str | None, num_workers: int):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # A private local instance (address="local"): never attach to a cluster some other
        # process on this machine started through /tmp/ray; token auth adds nothing in-process.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            address="local",
            num_cpus=max(1, num_workers),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return ray, True


def preprocess(
    input_spec,
    out_dir: str | os.PathLike,
    num_workers: int | None = None,
    skip_corrupt: bool = False,
    address: str | None = None,
    validate: bool = True,
    progress: bool = True,
) -> dict:
    """Convert every input shard (path/glob/list, see `tfrecord.expand_paths`) to a Parquet shard.

    One Ray task per input shard, at most `num_workers` in flight (default: min(4, cpu count)).
    Connects to `address` / `RAY_ADDRESS` when given (or uses an initialised Ray), else starts a
    small local Ray (on a cluster, `out_dir` and the inputs must be on storage every node sees:
    each task reads its input and writes its shard itself). `num_workers=0` converts in this
    process without Ray. Finished shards are
    skipped on re-run. Returns the manifest (also written to `out_dir/manifest.json`). Raises
    `PreprocessError` naming the input file when a shard fails (finished shards stay).
    `validate` (default): every scene goes through the one scene validation path
    (`smart_r1.data.validate`; a scene without map is allowed and counted): an invalid scene
    fails the shard, or with `skip_corrupt` is dropped and counted. An input without any
    record raises `EmptyInputError`, one whose every record was skipped `PreprocessError`.
    """
    from tqdm import tqdm

    from smart_r1.data.tfrecord import expand_paths

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".*{_TMP_MARK}*"):  # temp files of a killed run
        stale.unlink(missing_ok=True)
    inputs = expand_paths(input_spec)
    outputs = [out / output_name(p) for p in inputs]
    if len(set(outputs)) != len(outputs):
        raise PreprocessError("two inputs map to the same cache shard name (same file listed twice?)")
    entries: list[dict | None] = [_finished_entry(p, o) for p, o in zip(inputs, outputs)]
    todo = [i for i, e in enumerate(entries) if e is None]
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1)
    extra = {"skip_corrupt": bool(skip_corrupt), "validate": bool(validate)}
    _write_manifest(out, entries, inputs, extra)
    bar = tqdm(total=len(inputs), initial=len(inputs) - len(todo), desc="preprocess shards", unit="shard", disable=not progress)
    try:
        if not todo:
            pass
        elif num_workers == 0:
            for i in todo:
                try:
                    entries[i] = convert_shard(inputs[i], str(outputs[i]), skip_corrupt, validate)
                except Exception as err:
                    raise PreprocessError(f"{inputs[i]}: {type(err).__name__}: {err}") from err
                _write_manifest(out, entries, inputs, extra)
                bar.update(1)
        else:
            ray, started = _init_ray(address, num_workers)
            try:
                task = ray.remote(num_cpus=1, max_retries=0)(convert_shard)
                pending: dict = {}
                queue = list(todo)
                while queue or pending:
                    while queue and len(pending) < num_workers:
                        i = queue.pop(0)
                        pending[task.remote(inputs[i], str(outputs[i]), skip_corrupt, validate)] = i
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        i = pending.pop(ref)
                        try:
                            entries[i] = ray.get(ref)
                        except Exception as err:
                            for other in pending:
                                ray.cancel(other)
                            cause = getattr(err, "cause", None) or err
                            raise PreprocessError(f"{inputs[i]}: {type(cause).__name__}: {cause}") from err
                        _write_manifest(out, entries, inputs, extra)
                        bar.update(1)
            finally:
                if started:
                    ray.shutdown()
    finally:
        bar.close()
    manifest = _write_manifest(out, entries, inputs, extra)
    if manifest["n_scenes"] == 0:
        n_read = sum(int(e.get("records", 0)) + int(e.get("skipped", 0)) for e in entries if e)
        if n_read == 0:
            raise EmptyInputError(f"{input_spec}: the input holds no records (empty file?); the cache {out} is empty")
        raise PreprocessError(f"{input_spec}: no scene left: every one of the {n_read} records was skipped ({manifest.get('n_skipped', 0)} skipped)")
    return manifest


# ----------------------------------------------------------------------------- reading the cache
class SceneCache:
    """Random access to the scenes of a cache directory: `len(cache)`, `cache[i] -> Scene`.

    Scene order: shards in manifest (input) order, rows in record order. File handles are
    opened lazily per process, so a cache can be handed to DataLoader workers.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        import pyarrow.parquet as pq

        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / MANIFEST_NAME
        self.manifest: dict = {}
        if manifest_path.exists():
            self.manifest = json.loads(manifest_path.read_text())
            shards = [self.cache_dir / e["output"] for e in self.manifest.get("shards", [])]
        else:
            shards = sorted(self.cache_dir.glob("*.parquet"))
        if not self.cache_dir.is_dir():
            raise FileNotFoundError(f"no cache directory {self.cache_dir}")
        self.shards: list[Path] = []
        index: list[tuple[int, int, int]] = []  # (shard, row group, row in group)
        for path in shards:
            if not path.exists():
                raise FileNotFoundError(f"{manifest_path}: lists shard {path.name}, which is missing")
            md = pq.ParquetFile(path).metadata
            s = len(self.shards)
            self.shards.append(path)
            for g in range(md.num_row_groups):
                index.extend((s, g, r) for r in range(md.row_group(g).num_rows))
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 3)  # [n_scene, 3]
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _file(self, s: int):
        import pyarrow.parquet as pq

        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        pf = self._handles.get(s)
        if pf is None:
            pf = self._handles[s] = pq.ParquetFile(self.shards[s], memory_map=True)
        return pf

    def __getitem__(self, i: int) -> Scene:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"scene index {i} out of range for a cache of {n} scenes ({self.cache_dir})")
        s, g, r = (int(x) for x in self._index[i])
        table = self._file(s).read_row_group(g, use_threads=False)
        return _decode_rows(table, [r], str(self.shards[s]))[0]

    def __iter__(self) -> Iterator[Scene]:
        for s, path in enumerate(self.shards):
            pf = self._file(s)
            for g in range(pf.metadata.num_row_groups):
                table = pf.read_row_group(g, use_threads=False)
                yield from _decode_rows(table, range(table.num_rows), str(path))

    def scenario_ids(self) -> list[str]:
        import pyarrow.parquet as pq

        ids: list[str] = []
        for path in self.shards:
            ids.extend(pq.read_table(path, columns=["scenario_id"]).column("scenario_id").to_pylist())
        return ids


def collate_scenes(batch: list[Scene]) -> list[Scene]:
    """DataLoader collate: a batch stays a list of Scenes (ragged agents/maps)."""
    return list(batch)


class SceneDataset:
    """Map-style dataset over a `SceneCache` (`ds[i] -> Scene`), with seeded shuffled batches.

    `indices` restricts it to a subset (e.g. a train/val split). Use directly with
    `torch.utils.data.DataLoader(ds, collate_fn=collate_scenes, ...)` or `make_dataloader`,
    or without torch via `iter_batches`.
    """

    def __init__(self, cache: SceneCache | str | os.PathLike, indices: Sequence[int] | None = None):
        self.cache = cache if isinstance(cache, SceneCache) else SceneCache(cache)
        n = len(self.cache)
        self.indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"indices outside [0, {n}) for cache {self.cache.cache_dir}")

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> Scene:
        return self.cache[int(self.indices[i])]

    def order(self, shuffle: bool = True, seed: int = 0, epoch: int = 0) -> np.ndarray:
        """Positions in visiting order; the same (seed, epoch) gives the same order.  # [n]"""
        if not shuffle:
            return np.arange(len(self), dtype=np.int64)
        return np.random.default_rng([int(seed), int(epoch)]).permutation(len(self))

    def iter_batches(
        self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0, drop_last: bool = False
    ) -> Iterator[list[Scene]]:
        order = self.order(shuffle, seed, epoch)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if drop_last and len(chunk) < batch_size:
                return
            yield [self[int(i)] for i in chunk]


def make_dataloader(
    dataset: SceneDataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
):
    """A torch `DataLoader` yielding `list[Scene]` batches, shuffled reproducibly from `seed`."""
    import torch
    from torch.utils.data import DataLoader

    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        num_workers=num_workers,
        collate_fn=collate_scenes,
        drop_last=drop_last,
        persistent_workers=False,
    )
