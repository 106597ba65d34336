import numpy as np
import pytest

from smart_r1.data.scene import MapKind
from smart_r1.tokens.map_tokens import MapConfig, MapTokenizer, parametric_map_vocab, segment_scene_map

from .helpers import make_scene, straight


def _scene():
    return make_scene([(1, straight(5.0, 0.0, (0.0, 0.0)), None)])


def test_segments_cover_polylines():
    cfg = MapConfig()
    seg = segment_scene_map(_scene(), cfg)
    # lane 100 m -> 10 pieces, edge 60 m -> 6, crosswalk ring 4+6+4+6 = 20 m -> 2
    kinds = _scene().map.kind[seg.feature_index]
    assert (kinds == MapKind.LANE).sum() == 10 and (kinds == MapKind.ROAD_EDGE).sum() == 6 and (kinds == MapKind.CROSSWALK).sum() == 2
    assert seg.points.shape == (18, 11, 2)
    spacing = np.linalg.norm(np.diff(seg.points[kinds == MapKind.LANE], axis=1), axis=-1)
    np.testing.assert_allclose(spacing, 1.0, atol=1e-6)
    np.testing.assert_allclose(seg.pose[0], [5.0, 0.0, 0.0], atol=1e-6)  # middle point, chord heading


def test_tokenize_fields_signals_and_radius():
    scene = _scene()
    tok = MapTokenizer(None, MapConfig(vocab_size=64))  # parametric vocabulary fallback
    out = tok.tokenize(scene)
    n = out["map_token_pose"].shape[0]
    assert n == 18 and out["map_token_points"].shape == (n, 11, 2) and out["map_token_signal"].shape == (n, 19)
    lane = out["map_token_kind"] == MapKind.LANE
    # GO (6) before step 40 -> anchors 0..7, STOP (4) from anchor 8
    assert (out["map_token_signal"][lane, :8] == 6).all() and (out["map_token_signal"][lane, 8:] == 4).all()
    assert (out["map_token_signal"][~lane] == 0).all()
    assert (out["map_token_vocab_index"] >= 0).all() and (out["map_token_vocab_index"] < 64).all()
    # straight lane pieces match the straight entry (index 0) exactly
    assert (out["map_token_vocab_index"][lane] == 0).all()
    near = MapTokenizer(None, MapConfig(vocab_size=64, radius=20.0, center="sdc")).tokenize(scene)
    assert 0 < near["map_token_pose"].shape[0] < n
    assert (np.linalg.norm(near["map_token_pose"][:, :2] - scene.xy[0, 10], axis=-1) <= 20.0).all()


def test_parametric_vocab_and_errors():
    v = parametric_map_vocab(MapConfig(vocab_size=100))
    assert v.shape == (100, 11, 2) and np.isfinite(v).all()
    with pytest.raises(ValueError, match="n_points"):
        MapTokenizer(v, MapConfig(n_points=7))
    with pytest.raises(ValueError, match="unknown map kind"):
        segment_scene_map(_scene(), MapConfig(kinds=("lanes",)))


def test_learned_map_vocab_matches_well(small_vocab, real_scene):
    tok = MapTokenizer(small_vocab.map_segments, MapConfig(vocab_size=64))
    tok.tokenize(real_scene)
    assert tok.last_stats["n_kept"] > 500
    assert tok.last_stats["mean_vocab_distance"] < 0.5
