"""Training on several replicas (`tf.distribute`) computes what one device computes.

The equivalence runs train BPR, APR and SharpCF for 3 epochs (6 steps each,
the last batch 15 rows: split 7/8 across 2 replicas) with a fixed input order,
under the default strategy in this process and under 2 replicas in child
processes: MirroredStrategy over 2 logical CPU devices (which must be set up
before TensorFlow starts, hence a fresh process), and MultiWorkerMirroredStrategy
with 2 worker processes on 127.0.0.1. Losses per epoch, embeddings after every
epoch and the trajectory table must agree to float tolerance, and every
replica's copy of every table must be identical.

Run as a script (`python tests/test_distribute.py MODE OUT [TASK]`) this file
is the child process.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHODS = ("bpr", "apr", "sharpcf")
BATCH, EPOCHS = 32, 3


def tiny_interactions(folder: Path) -> Path:
    """25 users x 7 items of 40: N = 175 = 5 x 32 + 15."""
    sys.path.insert(0, str(HERE))
    from conftest import write_lightgcn
    rng = np.random.default_rng(3)
    train, test = {}, {}
    for u in range(25):
        items = rng.choice(40, size=9, replace=False)
        train[u], test[u] = items[:7].tolist(), items[7:].tolist()
    return write_lightgcn(folder, train, test)


def train_run(folder: Path, method: str, strategy, optimizer: str = "lazyadam"):
    """Trains `method` under `strategy`; -> dict of numpy arrays."""
    import tensorflow as tf
    from tf_sharpcf.callbacks import EpochCounter
    from tf_sharpcf.datasets import load_lightgcn
    from tf_sharpcf.distribute import distribute_batches
    from tf_sharpcf.input_pipeline import steps_per_epoch, training_dataset
    from tf_sharpcf.model import MatrixFactorization
    from tf_sharpcf.objectives import APR, BPR, SharpCF
    from tf_sharpcf.optimizers import make_optimizer
    from tf_sharpcf.trajectory import TrajectoryTable

    data = load_lightgcn(folder)
    with strategy.scope():
        objective = {"bpr": lambda: BPR(l2=1e-2),
                     "apr": lambda: APR(eps=0.5, adv_weight=1.0, l2=1e-2),
                     "sharpcf": lambda: SharpCF(TrajectoryTable(1, data.num_train), lam=0.5, l2=1e-2)}[method]()
        model = MatrixFactorization(data.num_users, data.num_items, dim=8, seed=0, objective=objective)
        lr = {"sgd": 20.0, "adagrad": 2.0}.get(optimizer, 0.05)
        model.compile(optimizer=make_optimizer(optimizer, lr), jit_compile=False, steps_per_execution=int(os.environ.get("SPE", 4)))
    snapshots = []

    class Snapshot(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(np.concatenate([model.user_embedding.numpy(), model.item_embedding.numpy()]))

    dataset = distribute_batches(strategy, training_dataset(data, BATCH, seed=0, start_epoch=0, end_epoch=EPOCHS))
    history = model.fit(dataset, epochs=EPOCHS, steps_per_epoch=steps_per_epoch(data.num_train, BATCH),
                        callbacks=[EpochCounter(), Snapshot()], verbose=0)
    out = {"loss": np.array(history.history["loss"]), "embeddings": np.stack(snapshots)}
    if method == "apr":
        out["adversarial_loss"] = np.array(history.history["adversarial_loss"])
    if method == "sharpcf":
        out["trajectory_loss"] = np.array(history.history["trajectory_loss"])
        out["table"] = objective.table.scores.numpy()
    # Every replica's copy of every table: spread across copies, 0 when equal.
    copies = [strategy.experimental_local_results(v) for v in
              [model.user_embedding, model.item_embedding]
              + ([objective.table.scores] if method == "sharpcf" else [])]
    out["copy_spread"] = np.array(max(float(np.max(np.abs(c.numpy() - vs[0].numpy())))
                                      for vs in copies for c in vs))
    out["replicas"] = np.array(strategy.num_replicas_in_sync)
    return out


CASES = [(m, "lazyadam") for m in METHODS] + [("bpr", "sgd"), ("bpr", "adagrad")]


def child(mode: str, out_dir: Path, folder: Path) -> None:
    import tf_sharpcf  # noqa: F401
    import tensorflow as tf
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_sharpcf.distribute import make_strategy
    strategy = make_strategy(mode)
    for method, optimizer in CASES:
        result = train_run(folder, method, strategy, optimizer)
        np.savez(out_dir / f"{method}-{optimizer}.npz", **result)


def run_children(mode: str, tmp_path: Path, workers: int):
    folder = tiny_interactions(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    outs = [tmp_path / f"worker{i}" for i in range(workers)]
    procs = []
    if workers > 1:
        ports = free_ports(workers)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    for i, out in enumerate(outs):
        out.mkdir()
        if workers > 1:
            env = {**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen([sys.executable, __file__, mode, str(out), str(folder)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=240)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return folder, outs


def free_ports(n: int):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def assert_same_training(folder: Path, outs):
    import tensorflow as tf
    for method, optimizer in CASES:
        reference = train_run(folder, method, tf.distribute.get_strategy(), optimizer)
        for out in outs:
            got = dict(np.load(out / f"{method}-{optimizer}.npz"))
            assert int(got["replicas"]) == 2
            assert float(got["copy_spread"]) == 0.0, (method, optimizer)
            for key in reference:
                if key in ("replicas", "copy_spread"):
                    continue
                np.testing.assert_allclose(got[key], reference[key], rtol=2e-5, atol=2e-6,
                                           err_msg=f"{method}/{optimizer}: {key}")


def test_two_mirrored_replicas_train_like_one_device(tmp_path):
    folder, outs = run_children("mirrored", tmp_path, workers=1)
    assert_same_training(folder, outs)


if __name__ == "__main__":
    child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
