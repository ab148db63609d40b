"""Training on several replicas (`tf.distribute`) computes what one device computes.

The equivalence runs train BPR, APR and SharpCF for 3 epochs of 7 steps with a
fixed input order (175 interactions, global batch 29: 6 full batches split
14/15 across the replicas, then a single row, so that one replica gets none),
under the default strategy in this
process and under 2 replicas in child processes: MirroredStrategy over 2
logical CPU devices (they must be set up before TensorFlow starts, hence a
fresh process) and MultiWorkerMirroredStrategy with 2 worker processes on
127.0.0.1. Per-epoch losses, the embeddings after every epoch and the
trajectory table must agree to float tolerance, and every replica's copy of
every table must be identical. `fit --strategy mirrored` must write the run
`fit` writes on one device, and a MirroredStrategy over a single device must
train like the default strategy.

Run as a script (`python tests/test_distribute.py MODE OUT DATA`) this file is
the child process.
"""
import csv
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tf_sharpcf  # noqa: E402,F401  (Keras-2 switch before TensorFlow)
from conftest import write_lightgcn  # noqa: E402
from tf_sharpcf.distribute.cluster import free_local_ports  # noqa: E402

METHODS = ("bpr", "apr", "sharpcf")
# Batches per call on 2 replicas: SharpCF goes through Keras' multi-step loop
# (the 6 full batches in one call, the short one alone); BPR and APR take one
# batch per call, which traces faster.
BATCHES_PER_CALL = {"bpr": 1, "apr": 1, "sharpcf": 8}
# One optimizer each, so that all three row-wise rules are checked; plain SGD
# is the one that would notice a wrong loss scale (Adam's steps hardly do).
OPTIMIZER = {"bpr": ("sgd", 10.0), "apr": ("adagrad", 0.5), "sharpcf": ("lazyadam", 0.05)}
BATCH, EPOCHS = 29, 3
CHILD_TIMEOUT_S = 300


# ---------------------------------------------------------------------------
# Pure helpers


def test_replica_slices_cut_a_batch_into_contiguous_parts_in_replica_order():
    import tensorflow as tf
    from tf_sharpcf.distribute.inputs import replica_slice
    ids = tf.range(5)
    # B = 5, R = 2: rows [⌊0·5/2⌋, ⌊1·5/2⌋) = [0, 2) and [2, 5)
    parts = [replica_slice((ids,), r, 2)[0].numpy().tolist() for r in range(2)]
    assert parts == [[0, 1], [2, 3, 4]]
    # B = 1, R = 2: one replica gets nothing
    assert [replica_slice((ids[:1],), r, 2)[0].numpy().tolist() for r in range(2)] == [[], [0]]


def test_steps_per_execution_puts_the_short_batch_in_a_call_of_its_own():
    from tf_sharpcf.distribute.inputs import steps_per_execution
    assert steps_per_execution(128, 810128, 8192) == 98     # Gowalla: 98 full batches + 1 short
    assert steps_per_execution(8, 175, 32) == 5              # 5 full + 15 rows: 5 | 5
    assert steps_per_execution(4, 175, 32) == 1              # 4 does not divide 5
    assert steps_per_execution(4, 160, 32) == 4              # no short batch
    assert steps_per_execution(4, 20, 32) == 4               # only a short batch


def test_replica_helpers_are_the_identity_on_one_device():
    import tensorflow as tf
    from tf_sharpcf.distribute.replica import (gather_across_replicas, global_batch_share, sum_rows_over_global_batch)
    from tf_sharpcf.optim.sparse import sum_repeated_rows
    grads, ids = tf.constant([[1.0, 0.0], [2.0, 1.0], [0.5, 0.5]]), tf.constant([4, 7, 4])
    assert global_batch_share(ids) is None
    out = gather_across_replicas(ids, grads)
    assert out[0] is ids and out[1] is grads
    np.testing.assert_array_equal(sum_rows_over_global_batch(grads, ids), sum_repeated_rows(grads, ids))


def test_unknown_strategy_is_a_config_error():
    from tf_sharpcf.config import Config
    from tf_sharpcf.errors import ConfigError
    with pytest.raises(ConfigError, match="--strategy"):
        Config().replace(train={"strategy": "tpu"}).validate()


# ---------------------------------------------------------------------------
# Equivalence runs


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """25 users x 7 training items of 40: N = 175 = 6 x 29 + 1."""
    folder = tmp_path_factory.mktemp("distribute") / "data"
    rng = np.random.default_rng(3)
    train, test = {}, {}
    for u in range(25):
        items = rng.choice(40, size=9, replace=False)
        train[u], test[u] = items[:7].tolist(), items[7:].tolist()
    return write_lightgcn(folder, train, test)


# K negatives per positive: replicas slice the [B, K] negatives with their rows,
# and APR's cross-replica perturbation sums over every negative row too.
NEGATIVES = {"bpr": 1, "apr": 3, "sharpcf": 2}


def train_run(folder: Path, method: str, strategy) -> dict:
    """Trains `method` under `strategy` through `fit_input`; -> numpy arrays."""
    import tensorflow as tf
    from tf_sharpcf.training.callbacks import EpochCounter
    from tf_sharpcf.data.readers import load_lightgcn
    from tf_sharpcf.distribute.inputs import fit_input
    from tf_sharpcf.model import MatrixFactorization
    from tf_sharpcf.objectives.apr import APR
    from tf_sharpcf.objectives.bpr import BPR
    from tf_sharpcf.objectives.sharpcf import SharpCF
    from tf_sharpcf.optim.optimizers import make_optimizer
    from tf_sharpcf.objectives.trajectory import TrajectoryTable

    data = load_lightgcn(folder)
    with strategy.scope():
        objective = {"bpr": lambda: BPR(l2=1e-2),
                     "apr": lambda: APR(eps=0.5, adv_weight=1.0, l2=1e-2),
                     "sharpcf": lambda: SharpCF(TrajectoryTable(1, data.num_train), lam=0.5, l2=1e-2)}[method]()
        model = MatrixFactorization(data.num_users, data.num_items, dim=8, seed=0, objective=objective)
        optimizer = make_optimizer(*OPTIMIZER[method])
        # Slots made now, not in the first trace: tf.function would trace again.
        optimizer.build(model.trainable_variables)
    plan = fit_input(strategy, data, BATCH, 0, 0, EPOCHS, batches_per_chunk=BATCHES_PER_CALL[method],
                     jit_compile=False, negatives=NEGATIVES[method])
    model.compile(optimizer=optimizer, jit_compile=plan.jit_compile, steps_per_execution=plan.steps_per_execution)
    snapshots = []

    class Snapshot(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(np.concatenate([model.user_embedding.numpy(), model.item_embedding.numpy()]))

    history = model.fit(plan.dataset, epochs=EPOCHS, steps_per_epoch=plan.steps_per_epoch,
                        callbacks=[EpochCounter(), Snapshot()], verbose=0)
    out = {name: np.array(values) for name, values in history.history.items()}
    out["embeddings"] = np.stack(snapshots)
    tables = [model.user_embedding, model.item_embedding]
    if method == "sharpcf":
        out["table"] = objective.table.scores.numpy()
        tables.append(objective.table.scores)
    # Largest difference between a replica's copy of a table and the first copy.
    out["copy_spread"] = np.array(max(
        float(np.max(np.abs(copy.numpy() - copies[0].numpy())))
        for copies in map(strategy.experimental_local_results, tables) for copy in copies))
    out["replicas"] = np.array(strategy.num_replicas_in_sync)
    return out


@functools.lru_cache(maxsize=None)
def reference(folder: Path) -> dict:
    import tensorflow as tf
    return {method: train_run(folder, method, tf.distribute.get_strategy()) for method in METHODS}


def fit_args(folder: Path, out: Path, strategy: str):
    """`fit` flags for APR: 1 BPR warm-up epoch, then 1 APR epoch."""
    return ["--dataset", str(folder), "--method", "apr", "--epochs", "2", "--warmup-epochs", "1",
            "--dim", "8", "--batch-size", str(BATCH), "--steps-per-execution", "8", "--no-jit",
            "--eval-every", "1", "--quiet", "--output-dir", str(out), "--strategy", strategy]


def shared_pool_args(folder: Path, out: Path, strategy: str):
    """`fit` flags for SharpCF on a softmax over one shared pool of negatives per batch."""
    return ["--dataset", str(folder), "--method", "sharpcf", "--loss", "softmax", "--sampler", "shared",
            "--negatives", "16", "--similarity", "cosine", "--epochs", "3", "--warmup-epochs", "1",
            "--window", "1", "--lam", "0.5", "--dim", "8", "--batch-size", str(BATCH), "--steps-per-execution",
            "8", "--no-jit", "--lr", "0.05", "--eval-every", "1", "--quiet", "--output-dir", str(out),
            "--strategy", strategy]


def child(mode: str, out_dir: Path, folder: Path) -> None:
    import tensorflow as tf
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_sharpcf.distribute.strategy import make_strategy
    strategy = make_strategy(mode)
    for method in METHODS:
        np.savez(out_dir / f"{method}.npz", **train_run(folder, method, strategy))
    if mode == "mirrored":
        from tf_sharpcf.cli.fit import main
        assert main(fit_args(folder, out_dir / "fit", mode)) == 0
        assert main(shared_pool_args(folder, out_dir / "shared", mode)) == 0


def start_children(mode: str, tmp_path: Path, folder: Path, workers: int):
    """-> [(output folder, process)]; each child's output goes to its log.txt."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if workers > 1:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in free_local_ports(workers)]}
    runs = []
    for i in range(workers):
        out = tmp_path / f"{mode}-{i}"
        out.mkdir()
        if workers > 1:
            env = {**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        with open(out / "log.txt", "w") as log:
            runs.append((out, subprocess.Popen([sys.executable, __file__, mode, str(out), str(folder)],
                                               env=env, stdout=log, stderr=subprocess.STDOUT)))
    return runs


def finish_children(runs):
    """Waits for the children and loads their results. When one fails or time
    runs out the others are stopped: a worker left alone waits for its peer."""
    procs = [proc for _, proc in runs]
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while any(p.poll() is None for p in procs):
        if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
            stop(procs)
            break
        time.sleep(0.2)
    for out, proc in runs:
        assert proc.returncode == 0, (out / "log.txt").read_text()[-4000:]
    return [{method: dict(np.load(out / f"{method}.npz")) for method in METHODS} for out, _ in runs]


def stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_same_training(results, expected):
    for method in METHODS:
        got, want = results[method], expected[method]
        assert int(got["replicas"]) == 2 and int(want["replicas"]) == 1
        assert float(got["copy_spread"]) == 0.0, method
        assert set(got) == set(want)
        for key in want:
            if key not in ("replicas", "copy_spread"):
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=f"{method}: {key}")


@pytest.fixture(scope="module")
def children(tiny_data, tmp_path_factory):
    """Starts the mirrored child and both workers at once, so that they overlap
    with each other and with this process's reference runs; stops whatever is
    left at the end."""
    tmp = tmp_path_factory.mktemp("children")
    runs = {"mirrored": start_children("mirrored", tmp, tiny_data, workers=1),
            "multi-worker": start_children("multi-worker", tmp, tiny_data, workers=2)}
    yield runs
    for group in runs.values():
        stop([proc for _, proc in group])


def test_mirrored_strategy_on_a_single_device_trains_like_the_default(tiny_data, children):
    # `children` first, so that they run meanwhile. One replica, but the
    # mirrored path: batches sliced for 1 replica, Keras' step loop, the
    # optimizer's (trivial) all-reduce.
    import tensorflow as tf
    expected = reference(tiny_data)["bpr"]
    got = train_run(tiny_data, "bpr", tf.distribute.MirroredStrategy(["/cpu:0"]))
    for key in ("loss", "embeddings"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_mirrored_replicas_train_like_one_device(tiny_data, children):
    expected = reference(tiny_data)            # computed while the children run
    [results] = finish_children(children["mirrored"])
    assert_same_training(results, expected)


@pytest.mark.subprocess
def test_fit_with_the_mirrored_strategy_writes_the_run_one_device_writes(tiny_data, children, tmp_path):
    from tf_sharpcf.cli.fit import main
    assert main(fit_args(tiny_data, tmp_path / "fit", "default")) == 0
    [(out, _)] = children["mirrored"]
    finish_children(children["mirrored"])
    mirrored, default = out / "fit", tmp_path / "fit"
    assert json.loads((mirrored / "config.json").read_text())["train"]["strategy"] == "mirrored"
    got, want = (list(csv.DictReader(open(run / "history.csv"))) for run in (mirrored, default))
    assert [row["epoch"] for row in got] == ["1", "2"]
    for column in ("loss", "bpr_loss", "adversarial_loss", "recall@20"):
        np.testing.assert_allclose([float(r[column] or "nan") for r in got],
                                   [float(r[column] or "nan") for r in want], rtol=1e-4, err_msg=column)
    for name in ("user_embeddings.npy", "item_embeddings.npy"):
        np.testing.assert_allclose(np.load(mirrored / name), np.load(default / name), rtol=1e-5, atol=1e-6)
    assert (mirrored / "checkpoints" / "best" / "ckpt.index").exists()


@pytest.mark.subprocess
def test_a_shared_pool_trains_under_two_mirrored_replicas(tiny_data, children, tmp_path):
    """Each replica scores its own rows against its own pool (docs/losses.md):
    not the one-device pool, so the run is checked for what must hold: it
    trains every epoch with finite losses and metrics, the softmax loss falls
    every epoch, as on one device, and the trajectory term is live."""
    from tf_sharpcf.cli.fit import main
    assert main(shared_pool_args(tiny_data, tmp_path / "shared", "default")) == 0
    [(out, _)] = children["mirrored"]
    finish_children(children["mirrored"])
    got, want = (list(csv.DictReader(open(run / "shared" / "history.csv" if run == out else run / "history.csv")))
                 for run in (out, tmp_path / "shared"))
    assert [row["epoch"] for row in got] == [row["epoch"] for row in want] == ["1", "2", "3"]
    for row in got:
        assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["recall@20"]))
    for run in (got, want):
        softmax = [float(row["softmax_loss"]) for row in run]
        assert softmax[0] > softmax[1] > softmax[2], softmax
    assert float(got[-1]["trajectory_loss"]) > 0.0
    assert json.loads((out / "shared" / "config.json").read_text())["train"]["strategy"] == "mirrored"
    for name in ("user_embeddings.npy", "item_embeddings.npy"):
        assert np.isfinite(np.load(out / "shared" / name)).all()


@pytest.mark.subprocess
def test_two_workers_train_like_one_device(tiny_data, children):
    expected = reference(tiny_data)
    workers = finish_children(children["multi-worker"])
    for results in workers:
        assert_same_training(results, expected)
    for method in METHODS:        # the workers' copies are the same to the bit
        for key in workers[0][method]:
            np.testing.assert_array_equal(workers[0][method][key], workers[1][method][key])


if __name__ == "__main__":
    child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
