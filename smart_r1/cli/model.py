"""`smart-r1 model info --preset NAME [--json]`: parameter counts and sizes of a model preset."""

from __future__ import annotations

import argparse
import json


def _info(args: argparse.Namespace) -> int:
    from smart_r1.model.presets import REFERENCE_VOCAB_SIZES, get_preset
    from smart_r1.model.smart import SmartModel

    cfg = get_preset(args.preset)
    if args.vocab_dir:
        from smart_r1.model.batch import vocab_sizes_of
        from smart_r1.tokens.motion_vocab import MotionVocab

        sizes = vocab_sizes_of(MotionVocab.load(args.vocab_dir))
        sizes.setdefault("map", cfg.map_vocab_size)
    else:
        sizes = dict(zip(("vehicle", "pedestrian", "cyclist"), REFERENCE_VOCAB_SIZES), map=cfg.map_vocab_size)
    model = SmartModel(cfg, sizes)
    info = {
        "preset": args.preset,
        "parameters": model.num_parameters(),
        "parameters_by_module": model.parameter_breakdown(),
        "vocab_sizes": sizes,
        "config": cfg.to_dict(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"preset {args.preset}: {info['parameters']:,} parameters "
          f"(vocabularies vehicle/pedestrian/cyclist {sizes['vehicle']}/{sizes['pedestrian']}/{sizes['cyclist']}, map {sizes['map']})")
    for k, v in info["parameters_by_module"].items():
        if k != "total":
            print(f"  {k:<26} {v:>12,}")
    c = cfg
    print(f"  hidden {c.hidden_dim}, {c.num_heads} heads x {c.head_dim}, ffn {c.ffn_dim}, {c.num_map_layers} map layers, "
          f"{c.num_agent_layers} agent layers, radii map-map {c.map_map_radius} m / map-agent {c.map_agent_radius} m / "
          f"agent-agent {c.agent_agent_radius} m, time span {c.time_span} steps, {c.num_freq_bands} Fourier bands, "
          f"dropout {c.dropout}, neighbour caps {c.max_map_map_neighbors}/{c.max_map_agent_neighbors}/{c.max_agent_agent_neighbors}")
    return 0


def register(subparsers) -> None:
    from smart_r1.model.presets import preset_names

    p = subparsers.add_parser("model", help="model presets: parameter counts and sizes")
    sub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    info = sub.add_parser("info", help="parameter count by module and sizes of a preset")
    info.add_argument("--preset", required=True, choices=preset_names())
    info.add_argument("--vocab-dir", default=None, help="count with this motion vocabulary's sizes (default: 3 x 2048 + 1024 map)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
