"""`smart-r1 tokens ...`: build the motion / map-segment vocabulary, report tokenization error.

    smart-r1 tokens build-vocab --scenes GLOB --out DIR [--size N --tolerance T --samples S --seed K]
    smart-r1 tokens report --vocab DIR --scenes GLOB [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser("tokens", help="motion / map token vocabulary and tokenization report")
    sub = p.add_subparsers(dest="tokens_command", metavar="ACTION")

    b = sub.add_parser("build-vocab", help="build a k-disks motion vocabulary (+ map-segment vocabulary) from scenes")
    b.add_argument("--scenes", required=True, nargs="+", help="glob(s) of scene files (TFRecord of Scenario protos)")
    b.add_argument("--out", required=True, help="output directory (vocab.npz + vocab.json)")
    b.add_argument("--size", type=int, default=None, help="tokens per agent type (default VocabConfig.size)")
    b.add_argument("--tolerance", type=float, default=None, help="k-disks tolerance, m of mean corner distance")
    b.add_argument("--samples", type=int, default=None, help="max data samples per agent type")
    b.add_argument("--min-samples", type=int, default=None, help="synthetic fill up to this many samples per type")
    b.add_argument("--map-size", type=int, default=None, help="map-segment vocabulary size")
    b.add_argument("--no-adapt", action="store_true", help="keep the tolerance fixed (no search)")
    b.add_argument("--seed", type=int, default=None)
    b.add_argument("--json", action="store_true", help="print the vocabulary metadata as JSON")
    b.set_defaults(func=_build_vocab)

    r = sub.add_parser("report", help="tokenize scenes and report reconstruction error per agent type")
    r.add_argument("--vocab", required=True, help="vocabulary directory")
    r.add_argument("--scenes", required=True, nargs="+", help="glob(s) of scene files")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_report)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _build_vocab(args) -> int:
    from smart_r1.tokens._scene_loader import iter_scenes
    from smart_r1.tokens.motion_vocab import VocabConfig, build_motion_vocab

    cfg = VocabConfig()
    for name, attr in (("size", "size"), ("tolerance", "tolerance"), ("samples", "samples"), ("min_samples", "min_samples"), ("seed", "seed")):
        v = getattr(args, name)
        if v is not None:
            setattr(cfg, attr, v)
    if args.no_adapt:
        cfg.adapt_tolerance = False
    if args.map_size is not None:
        cfg.map = dict(cfg.map, vocab_size=args.map_size)
    t0 = time.perf_counter()
    vocab = build_motion_vocab(iter_scenes(args.scenes), cfg)
    out = vocab.save(args.out)
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps(vocab.meta, indent=2, sort_keys=True))
    else:
        print(f"vocabulary {vocab.vocab_id} -> {out} ({seconds:.1f} s, {vocab.meta['n_scenes']} scenes, data hash {vocab.data_hash})")
        for name, info in vocab.meta["types"].items():
            print(
                f"  {name:10s} size {info['size']:5d}  samples {info['n_real_samples']:7d} real + {info['n_synthetic_samples']:6d} synthetic"
                f"  tolerance {info['tolerance_final']:.4f} m  (k-disks {info['n_kdisks']}, fill {info['n_fill']}, covered {info['covered']})"
            )
        if vocab.map_segments is not None:
            m = vocab.meta["map"]
            print(f"  map        size {vocab.map_segments.shape[0]:5d}  segments {m['n_samples']:7d}  tolerance {m['tolerance_final']:.4f} m")
    return 0


def _report(args) -> int:
    from smart_r1.tokens._scene_loader import iter_scenes
    from smart_r1.tokens.motion_vocab import MotionVocab
    from smart_r1.tokens.tokenizer import Tokenizer, merge_errors, reconstruction_error

    vocab = MotionVocab.load(args.vocab)
    tok = Tokenizer(vocab)
    per_scene = []
    n_map = 0
    t0 = time.perf_counter()
    from tqdm import tqdm

    for scene in tqdm(iter_scenes(args.scenes), desc="tokenize", unit="scene", file=sys.stderr):
        ts = tok.tokenize(scene)
        n_map += ts.n_map_token
        per_scene.append(reconstruction_error(scene, ts, vocab))
    if not per_scene:
        print("no scenes", file=sys.stderr)
        return 1
    merged = merge_errors(per_scene)
    result = {
        "vocab_id": vocab.vocab_id,
        "n_scenes": len(per_scene),
        "n_map_tokens": n_map,
        "seconds": round(time.perf_counter() - t0, 3),
        "errors": merged,
    }
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"vocabulary {vocab.vocab_id}: {len(per_scene)} scenes, {n_map} map tokens, {result['seconds']:.1f} s")
    print(f"  {'type':10s} {'tokens':>7s} {'corner@anchor':>14s} {'max':>7s} {'pos@anchor':>11s} {'corner@10Hz':>12s} {'heading':>8s}")
    for name, e in merged.items():
        print(
            f"  {name:10s} {e['n_tokens']:7d} {e.get('corner_anchor_mean', float('nan')):14.4f} {e.get('corner_anchor_max', float('nan')):7.3f}"
            f" {e.get('pos_anchor_mean', float('nan')):11.4f} {e.get('corner_step_mean', float('nan')):12.4f} {e.get('heading_anchor_mean', float('nan')):8.4f}"
        )
    return 0
