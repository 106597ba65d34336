"""SMART next-token model: presets, batching, layers, model."""

from smart_r1.model.batch import AgentBatch, collate, vocab_sizes_of  # noqa: F401
from smart_r1.model.presets import ModelConfig, get_preset, preset_names  # noqa: F401
from smart_r1.model.smart import SmartModel, build_model  # noqa: F401
