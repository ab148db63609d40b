"""An objective's own state (`Objective.state`): attached to the model under
its name, so checkpoints carry it with the keys of old, and continued from a
shared warm-up's recording by the one warm-start service (`warmup.continue_from`)
that the experiment runner and the tuner both use."""
import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf import methods
from tf_sharpcf.config import Config
from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.errors import DataError
from tf_sharpcf.objectives.base import Objective
from tf_sharpcf.objectives.trajectory import reslot
from tf_sharpcf.training import checkpointing, run_dir, train, warmup
from tf_sharpcf.tuning import warm_starts


def _config(tiny_folder, **train_fields):
    return Config().replace(data={"dataset": str(tiny_folder)}, model={"dim": 4}, eval={"eval_every": 3},
                            train={"epochs": 5, "warmup_epochs": 3, "batch_size": 64, "jit_compile": False,
                                   **train_fields})


def test_state_is_attached_under_its_name_and_checkpointed_with_the_keys_of_old(tiny_folder, tmp_path):
    assert Objective().state() == {}
    data = load_lightgcn(tiny_folder)
    config = _config(tiny_folder, method="sharpcf", window=2)
    model, objective, optimizer = train.build_model(config, data)
    (name, table), = objective.state().items()
    assert getattr(model, name) is table
    folder = checkpointing.write(tmp_path / "ckpt", model, optimizer)
    keys = [k for k, _ in tf.train.list_variables(str(folder / checkpointing.PREFIX))]
    assert "model/trajectory/scores/.ATTRIBUTES/VARIABLE_VALUE" in keys     # existing checkpoints load
    assert checkpointing.model_attributes(folder) >= {name, "epoch"}
    for method in ("bpr", "apr"):
        assert methods.make_objective(config.replace(train={"method": method}).train, 10).state() == {}


def test_a_run_continues_a_wider_recording_of_its_warm_up(tiny_folder, tmp_path):
    """The runner's branch: a warm-up recording W = 3 epochs, a run with E = 2
    (a group whose SharpCF runs differ in E) gets the re-slotted table."""
    data = load_lightgcn(tiny_folder)
    wide, run = (_config(tiny_folder, method="sharpcf", window=w, lam=0.5) for w in (3, 2))
    warm = warmup.warmup_config([wide, run])
    assert (warm.train.method, warm.train.lam, warm.train.window, warm.train.epochs) == ("sharpcf", 0.0, 3, 3)
    train.train_and_evaluate(warm, tmp_path / "warmup", data, verbose=0)
    recorded = tf.train.load_variable(str(checkpointing.find(tmp_path / "warmup" / run_dir.LAST) /
                                          checkpointing.PREFIX), "model/trajectory/scores/.ATTRIBUTES/VARIABLE_VALUE")
    assert recorded.shape == (data.num_train, 3)
    warmup.branch(tmp_path / "warmup", run, tmp_path / "run", data)
    branched = checkpointing.find(tmp_path / "run" / run_dir.LAST)
    table = tf.train.load_variable(str(branched / checkpointing.PREFIX),
                                   "model/trajectory/scores/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(table, reslot(recorded, 3, 2))
    assert np.abs(table).sum() > 0
    rows = checkpointing.read_meta(branched)["history"]
    assert len(rows) == 3 and all("trajectory_loss" in r for r in rows)
    bpr = run.replace(train={"method": "bpr"})
    warmup.branch(tmp_path / "warmup", bpr, tmp_path / "bpr", data)
    bpr_ckpt = checkpointing.find(tmp_path / "bpr" / run_dir.LAST)
    assert "trajectory" not in checkpointing.model_attributes(bpr_ckpt)       # BPR's checkpoint as before
    assert all("trajectory_loss" not in r for r in checkpointing.read_meta(bpr_ckpt)["history"])


def test_a_tuner_warm_up_cached_with_its_table_beside_the_checkpoint_is_a_clear_error(tiny_folder, tmp_path):
    data = load_lightgcn(tiny_folder)
    config = _config(tiny_folder, method="sharpcf", window=2)
    cache = warm_starts.WarmStarts(tmp_path / "warmup", data, window=3)
    cache.ensure(config)
    folder = cache.folder(config)
    assert not list(folder.glob("*.npy"))          # the table is in the checkpoint now
    # What an older version cached: the checkpoint without the table, the table in trajectory.npy.
    found = checkpointing.find(folder / "checkpoint")
    meta = checkpointing.read_meta(found)
    model, _, optimizer = train.build_model(config.replace(train={"method": methods.WARMUP_METHOD}), data)
    checkpointing.restore(found, model, optimizer)
    checkpointing.write(folder / "checkpoint", model, optimizer, {k: v for k, v in meta.items() if k != "files"})
    np.save(folder / "trajectory.npy", np.zeros([data.num_train, 3], np.float32))
    with pytest.raises(DataError, match=f"{folder}.*trajectory.npy.*delete that folder"):
        cache.checkpoint(config, tmp_path / "init")
