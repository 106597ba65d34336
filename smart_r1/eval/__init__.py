"""Evaluation of checkpoints / baselines / rollout files on scenes (see `evaluate.py`)."""

from smart_r1.eval.evaluate import EvaluationResult, SceneResult, ScoreStore, evaluate, evaluate_scene  # noqa: F401
from smart_r1.eval.sources import make_source, scene_seed  # noqa: F401
