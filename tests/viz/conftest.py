"""One torch thread for the viz / report tests: their tensors are small, and on a shared 2-core
machine thread oversubscription makes small ops much slower. Restored after each module (module scope: module fixtures run single-threaded too)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def untrained_checkpoint(tmp_path, tiny_data, tiny_data_dir):
    """An untrained cpu-demo checkpoint on the (session) tiny_test data:
    (checkpoint path, its model, the first validation scene, that scene's TFRecord file)."""
    from smart_r1.data.scenario_io import iter_scenes
    from smart_r1.train.checkpoint import Checkpoint
    from smart_r1.train.pipeline import build_model_for
    from tiny_setup import tiny_config

    cfg = tiny_config()
    data = tiny_data
    model = build_model_for(cfg, data.vocab)
    path = Checkpoint(
        model=model.state_dict(), config={}, stage_index=0, stage_name="init", step=0, vocab_dir=str(data.vocab_dir),
        vocab_id=getattr(data.vocab, "vocab_id", None), model_config=model.config.to_dict(),
    ).save(tmp_path / "run" / "checkpoints" / "last.pt")
    val_files = sorted(p for p in (tiny_data_dir / "scenes").rglob("validation*.tfrecord*") if p.suffix != ".parquet")
    assert val_files, "tiny_test data has no validation shard"
    return path, model, next(iter(iter_scenes(str(val_files[0])))), val_files[0]
