"""`--strategy parameter-server` on a real cluster of local processes.

Parameter servers and workers are separate processes
(`python -m tf_sharpcf.parameter_server`, a `tf.distribute.Server` on a
127.0.0.1 port picked here); the coordinator is this test process (the
in-process run) or a `fit` subprocess (the lost-server run). Every server
exits by itself when this process ends (`--parent-pid`) or after a bounded
time (`--timeout-s`), and the fixtures kill them at teardown.
"""
import csv
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import checkerboard, write_lightgcn
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.distribute import cluster as ps_cluster
from tf_sharpcf.distribute import parameter_server
from tf_sharpcf.distribute.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# TF_CONFIG and settings: no cluster needed


def test_tf_config_errors_name_the_problem(monkeypatch):
    cluster = {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3"]}
    bad = {
        None: "needs TF_CONFIG",
        "{not json": "not valid JSON",
        json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "chief"}}): "no 'ps' tasks",
        json.dumps({"cluster": {"chief": ["h:1"], "ps": ["h:2"]}, "task": {"type": "chief"}}): "no 'worker' tasks",
        json.dumps({"cluster": {"worker": ["h:2"], "ps": ["h:3"]}, "task": {"type": "worker"}}): "one 'chief'",
        json.dumps({"cluster": cluster, "task": {"type": "evaluator"}}): "this task's type",
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 3}}): "task index 3",
    }
    for raw, message in bad.items():
        env = {} if raw is None else {"TF_CONFIG": raw}
        with pytest.raises(ConfigError, match=message):
            ps_cluster.cluster_config(env)
    good = ps_cluster.cluster_config({"TF_CONFIG": json.dumps({"cluster": cluster,
                                                                     "task": {"type": "ps", "index": 0}})})
    assert good["task"] == {"type": "ps", "index": 0}


def test_fit_refuses_forced_xla_and_a_cluster_without_ps(tiny_folder, tmp_path, capsys, monkeypatch):
    from tf_sharpcf.cli.fit import main
    args = ["--dataset", str(tiny_folder), "--strategy", "parameter-server", "--quiet",
            "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--jit"]) == 2
    assert "invalid --jit" in capsys.readouterr().err
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                                                "task": {"type": "chief", "index": 0}}))
    assert main(args) == 2
    assert "no 'ps' tasks" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()          # nothing written


def test_a_server_exits_when_its_parent_is_gone(tmp_path):
    """`--parent-pid`: a server whose coordinator died does not linger."""
    cluster = LocalCluster(tmp_path, workers=1, ps=1)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": cluster.tf_config("ps", 0)}
    server = subprocess.Popen([sys.executable, "-m", "tf_sharpcf.parameter_server", "--parent-pid",
                               str(sleeper.pid)], env=env, stderr=subprocess.DEVNULL)
    try:
        ps_cluster.wait_listening(cluster.cluster["ps"][0], server)
        sleeper.kill()
        sleeper.wait()
        assert server.wait(timeout=60) == 0
    finally:
        for p in (sleeper, server):
            if p.poll() is None:
                p.kill()


# ---------------------------------------------------------------------------
# One in-process run: SharpCF on the checkerboard, a worker killed mid-epoch

EPOCHS, KILL_EPOCH, WINDOW = 30, 12, 2


class Watch(tf.keras.callbacks.Callback):
    """Records the trajectory table around every epoch and kills worker 1
    after scheduling a few steps of epoch KILL_EPOCH."""

    def __init__(self, cluster: LocalCluster):
        super().__init__()
        self._supports_tf_logs = True    # batch hooks under ParameterServerStrategy (logs are RemoteValues)
        self.cluster, self.writes, self.kept, self.shards = cluster, {}, {}, {}

    def _table(self):
        return tf.convert_to_tensor(self.model.trajectory.scores).numpy()

    def on_train_begin(self, logs=None):
        if not self.shards:
            for name in ("user_embedding", "item_embedding"):
                var = getattr(self.model, name)
                self.shards[name] = [(v.shape[0], v.device) for v in var.variables]
            self.shards["trajectory"] = [(v.shape[0], v.device) for v in self.model.trajectory.scores.variables]
            self.shards["slots"] = self.model.trajectory.slots

    def on_epoch_begin(self, epoch, logs=None):
        self.before = self._table()

    def on_train_batch_end(self, batch, logs=None):
        if self.model.epoch.numpy() == KILL_EPOCH and batch == 5 and ("worker", 1) in self.cluster.procs:
            self.cluster.kill("worker", 1)

    def on_epoch_end(self, epoch, logs=None):
        after, slots = self._table(), self.model.trajectory.slots
        slot = epoch % slots
        self.writes[epoch] = float(np.mean(after[:, slot] != self.before[:, slot]))
        others = [s for s in range(slots) if s != slot]
        self.kept[epoch] = bool(np.array_equal(after[:, others], self.before[:, others]))


@pytest.fixture(scope="session")
def ps_run(tmp_path_factory):
    """The cluster outlives the run: this process's TensorFlow context keeps
    talking to its servers until the functions it sent them are released, so
    the killed worker is restarted and every server exits with this process
    (`--parent-pid`) rather than at teardown.

    The trained model is released before the killed worker is restarted: its
    traced step captured handles of worker 1's per-worker resources. Kept
    alive to the end of the session, they were freed at this process's exit
    and their deletion sent to the restarted worker, which never had them:
    `W0000 ... Unable to find the relevant tensor remote_handle` after
    pytest's summary (issue 28, item 5)."""
    folder = tmp_path_factory.mktemp("ps")
    train, test = checkerboard(16)
    data = write_lightgcn(folder / "board", train, test)
    cluster = LocalCluster(folder, workers=2, ps=2).start_all()
    saved = os.environ.get("TF_CONFIG")
    os.environ["TF_CONFIG"] = cluster.tf_config("chief", 0)
    try:
        from tf_sharpcf.training.train import train_and_evaluate
        config = Config().replace(
            data={"dataset": str(data)}, model={"dim": 8},
            train={"method": "sharpcf", "epochs": EPOCHS, "warmup_epochs": 8, "window": WINDOW, "lam": 0.1,
                   "negatives": 2, "batch_size": 16, "lr": 0.05, "l2": 1e-3, "strategy": "parameter-server"},
            eval={"ks": (1, 2), "eval_every": 10})
        watch = Watch(cluster)
        steppers, install = [], parameter_server.ScheduledSteps.install
        with pytest.MonkeyPatch.context() as patch:       # to read the scheduler's step counts
            patch.setattr(parameter_server.ScheduledSteps, "install",
                          lambda self, model: (steppers.append(self), install(self, model))[1])
            metrics = train_and_evaluate(config, folder / "run", verbose=0, callbacks=[watch])
    finally:        # the strategy is made; later tests must not see this process as a chief
        if saved is None:
            os.environ.pop("TF_CONFIG", None)
        else:
            os.environ["TF_CONFIG"] = saved
    from tf_sharpcf.optim.optimizers import row_kernel_usable
    from tf_sharpcf.distribute.strategy import make_strategy
    strategy = make_strategy("parameter-server")
    result = {"metrics": metrics, "watch": watch, "run": folder / "run",
              "kernel": row_kernel_usable(watch.model.optimizer, strategy),
              "scheduled": steppers[-1].scheduled, "runs": int(steppers[-1].runs.numpy())}
    watch.model = None          # callbacks held the model: only plain results are kept
    del steppers
    gc.collect()                # the model's reference cycles, inside this captured setup
    result["killed"] = ("worker", 1) not in cluster.procs
    if result["killed"]:
        cluster.start("worker", 1)
    yield result
    gc.collect()                # what the tests left, while every server still runs


@pytest.mark.slow
def test_tables_are_sharded_across_both_parameter_servers(ps_run):
    shards = ps_run["watch"].shards
    for name in ("user_embedding", "item_embedding", "trajectory"):
        rows = [r for r, _ in shards[name]]
        devices = sorted(d.split("/device")[0] for _, d in shards[name])
        assert len(rows) == 2 and abs(rows[0] - rows[1]) <= 1, (name, shards[name])
        assert devices == ["/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"], (name, devices)
    assert shards["slots"] == WINDOW + 1            # retry-safe: E + 1 slots
    assert not ps_run["kernel"]                      # no fused row kernel on sharded variables


@pytest.mark.slow
def test_training_converges_with_a_worker_killed_mid_epoch(ps_run):
    assert ps_run["killed"]
    # Every scheduled step ran (at least) once: one per batch of each epoch;
    # a step begun on the killed worker ran again on the other.
    steps = -(-sum(len(items) for items in checkerboard(16)[0].values()) // 16)      # 112 rows, batch 16
    assert ps_run["scheduled"] == EPOCHS * steps
    assert ps_run["runs"] >= ps_run["scheduled"]
    # The withheld item ranks first (chance: 1 in 9). Asynchronous updates
    # make the order of steps depend on the machine's load: one run with the
    # suite beside a training job ranked 15 of 16 users' items first, so one
    # miss is allowed.
    assert ps_run["metrics"]["final"]["recall@1"] >= 15 / 16
    with open(ps_run["run"] / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert float(rows[-1]["bpr_loss"]) < 0.5 * float(rows[0]["bpr_loss"])


def test_every_trajectory_slot_is_written_each_epoch_and_no_other(ps_run):
    watch = ps_run["watch"]
    assert sorted(watch.writes) == list(range(EPOCHS))
    assert all(fraction == 1.0 for fraction in watch.writes.values()), watch.writes
    assert all(watch.kept.values()), watch.kept
    assert watch.writes[KILL_EPOCH] == 1.0


def test_a_parameter_server_run_evaluates_and_exports(ps_run, tmp_path):
    metrics = json.loads((ps_run["run"] / "metrics.json").read_text())
    assert metrics["test_users_evaluated"] == 16
    users = np.load(ps_run["run"] / "user_embeddings.npy")
    assert users.shape == (16, 8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "tf_sharpcf.export", "--run", str(ps_run["run"]),
                           "--index", "brute-force", "--k", "2", "--base-dir", str(tmp_path / "models")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "models").glob("*/1/saved_model.pb"))


@pytest.mark.parametrize("name", ["sgd", "adagrad", "lazyadam"])
def test_row_wise_updates_run_per_shard_and_touch_only_the_batch_rows(ps_run, tiny_folder, name):
    """On the same cluster: one scheduled step changes exactly its batch's
    user rows in both shards, and the optimizer's slots sit on the servers."""
    from tf_sharpcf.distribute.strategy import make_strategy
    from tf_sharpcf.data.readers import load_lightgcn
    from tf_sharpcf.data.input_pipeline import feistel_round_keys, index_permutation
    from tf_sharpcf.model import MatrixFactorization
    from tf_sharpcf.objectives.bpr import BPR
    from tf_sharpcf.optim.optimizers import make_optimizer
    strategy = make_strategy("parameter-server")
    data = load_lightgcn(tiny_folder)
    with strategy.scope():
        model = MatrixFactorization(data.num_users, data.num_items, 4, objective=BPR(l2=0.0))
        batches = parameter_server.ShardedBatches(data, batch_size=6, seed=0, negatives=1)
        with pytest.raises(ValueError, match="row_kernel=True needs"):
            model.compile(optimizer=make_optimizer("lazyadam", 0.1), jit_compile=True, row_kernel=True)
        model.compile(optimizer=make_optimizer(name, 0.1 if name != "sgd" else 50.0), jit_compile=False)
    scheduled = parameter_server.ScheduledSteps(strategy, batches)
    scheduled.install(model)
    before = tf.convert_to_tensor(model.user_embedding).numpy()
    scheduled.on_epoch_begin(0)
    model.train_function(None)
    scheduled.coordinator.join()
    after = tf.convert_to_tensor(model.user_embedding).numpy()
    ids = index_permutation(tf.range(6, dtype=tf.int64), data.num_train, feistel_round_keys(0, 0)).numpy()
    batch_users = set(data.train_users[ids].tolist())
    changed = set(np.flatnonzero(np.any(after != before, axis=1)).tolist())
    assert changed == batch_users
    first_shard_rows = model.user_embedding.variables[0].shape[0]
    assert min(batch_users) < first_shard_rows <= max(batch_users)      # rows of both shards changed
    # The slots (none for SGD) are split like their tables.
    slots = [v for v in model.optimizer.variables if v.shape.rank == 2]
    assert len(slots) == {"sgd": 0, "adagrad": 2, "lazyadam": 4}[name]
    for slot in slots:
        assert sorted(s.device.split("/device")[0] for s in slot.variables) == [
            "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]


def test_fit_on_a_worker_or_ps_task_serves(tiny_folder, tmp_path, monkeypatch):
    from tf_sharpcf.cli import fit
    served = []
    monkeypatch.setattr(ps_cluster, "serve", lambda *a, **k: served.append(True))
    cluster = {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3"]}
    for kind in ("worker", "ps"):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": 0}}))
        assert fit.main(["--dataset", str(tiny_folder), "--strategy", "parameter-server",
                         "--output-dir", str(tmp_path / "run")]) == 0
    assert served == [True, True] and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# A parameter server lost: fit (coordinator subprocess) stops with the last
# good checkpoint, and --resume continues on a restarted cluster


def _checkpointed_epochs(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "last" / "meta.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_a_lost_parameter_server_names_the_checkpoint_and_resume_continues(tmp_path):
    train, test = checkerboard(16)
    data = write_lightgcn(tmp_path / "board", train, test)
    run = tmp_path / "run"
    args = ["--dataset", str(data), "--method", "bpr", "--epochs", "40", "--warmup-epochs", "0",
            "--dim", "8", "--batch-size", "16", "--lr", "0.05", "--strategy", "parameter-server",
            "--eval-every", "1000", "--k", "1", "--quiet"]

    def fit(cluster, extra):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": cluster.tf_config("chief", 0),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        return subprocess.Popen([sys.executable, "-m", "tf_sharpcf.fit", *extra], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = LocalCluster(tmp_path, workers=1, ps=2).start_all()
    try:
        proc = fit(first, [*args, "--output-dir", str(run)])
        deadline = time.monotonic() + 240
        while _checkpointed_epochs(run) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        first.kill("ps", 1)
        _, err = proc.communicate(timeout=240)
    finally:
        first.stop()
    assert proc.returncode == 3, err
    assert "the cluster lost" in err and "last good checkpoint is" in err, err
    done_epochs = _checkpointed_epochs(run)
    assert done_epochs >= 2 and f"(epoch {done_epochs})" in err

    second = LocalCluster(tmp_path, workers=1, ps=2).start_all()
    try:
        proc = fit(second, ["--resume", str(run)])
        out, err = proc.communicate(timeout=300)
    finally:
        second.stop()
    assert proc.returncode == 0, err
    assert f"after epoch {done_epochs} of" in err
    with open(run / "history.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == list(range(1, 41))
