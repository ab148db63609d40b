"""The chief of a parameter-server cluster killed and restarted (issue 29).

The ps and worker tasks are local processes that keep running
(`LocalCluster`); the chief is a `fit --strategy parameter-server`
subprocess, SIGKILLed in the middle of an epoch, after steps of that epoch
were scheduled and run on the worker, and then started again with
`fit --resume`. It opens a new context on the servers, restores
checkpoints/last/ (written at the end of the previous epoch) into the tables
it creates there, and trains the epoch it died in again from its first step.

A chief that cannot reach every task would wait without a word inside
TensorFlow; it stops with an error naming the tasks to start instead.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import checkerboard, write_lightgcn
from tf_sharpcf.distribute import cluster as ps_cluster, strategy as strategy_module
from tf_sharpcf.distribute.local_cluster import LocalCluster
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.training import checkpointing, run_dir

ROOT = Path(__file__).resolve().parents[1]

# The checkerboard's 112 training rows in batches of 16: 7 steps per epoch.
# The chief dies after scheduling step KILL_STEP (0-based) of epoch
# KILL_EPOCH (0-based), with checkpoints/last/ at the end of the epoch before.
EPOCHS, KILL_EPOCH, KILL_STEP, ROWS, STEPS = 6, 3, 3, 112, 7
ARGS = ["--method", "sharpcf", "--epochs", str(EPOCHS), "--warmup-epochs", "2", "--window", "2", "--dim", "8",
        "--batch-size", "16", "--strategy", "parameter-server", "--eval-every", "1000", "--k", "1", "--quiet"]

# `fit` as the chief, with three test-only hooks:
# * TrajectoryTable gets a [N, EPOCHS] float32 variable `writes` beside its
#   scores; every trajectory write of element i in epoch e adds 1 at [i, e]
#   in the same step. It is a model variable like the table (sharded on the
#   servers, checkpointed, restored), so it counts the writes the restored
#   state holds.
# * every scheduled step appends "pid epoch step" to $STEPS_LOG;
# * after scheduling step $PAUSE_AT ("epoch step") the chief sleeps, to be
#   killed there; the worker runs the steps already scheduled meanwhile.
CHIEF = r'''
import os, sys, time
import tf_sharpcf
import tensorflow as tf
from tf_sharpcf.objectives.trajectory import TrajectoryTable
from tf_sharpcf.distribute import parameter_server
from tf_sharpcf.cli import fit

EPOCHS = int(os.environ["EPOCHS"])
table_init, exchange = TrajectoryTable.__init__, TrajectoryTable.exchange

def counting_init(self, *args, **kwargs):
    table_init(self, *args, **kwargs)
    with self.name_scope:
        self.writes = tf.Variable(tf.zeros([self.num_elements, EPOCHS]), trainable=False, name="writes")

def counting_exchange(self, ids, scores, epoch):
    old, write = exchange(self, ids, scores, epoch)
    ones = tf.ones_like(scores)[:, None] * tf.one_hot(tf.cast(epoch, tf.int32), EPOCHS)[None]
    return old, tf.group(write, self.writes.scatter_add(tf.IndexedSlices(ones, ids)))
TrajectoryTable.__init__, TrajectoryTable.exchange = counting_init, counting_exchange

install = parameter_server.ScheduledSteps.install
def traced_install(self, model):
    install(self, model)
    schedule = model.train_function
    def train_function(iterator):
        point = f"{self._epoch} {self._step}"
        out = schedule(iterator)
        with open(os.environ["STEPS_LOG"], "a") as f:
            f.write(f"{os.getpid()} {point}\n")
        if os.environ.get("PAUSE_AT") == point:
            open(os.environ["PAUSE_MARKER"], "w").close()
            time.sleep(600)               # killed here
        return out
    model.train_function = train_function
parameter_server.ScheduledSteps.install = traced_install

sys.exit(fit.main(sys.argv[1:]))
'''


def start_chief(cluster: LocalCluster, args, log: Path, **env) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": cluster.tf_config("chief", 0),
           "TF_CPP_MIN_LOG_LEVEL": "3", "EPOCHS": str(EPOCHS), **env}
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-c", CHIEF, *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"the chief exited ({proc.returncode}): {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout_s} s"
        time.sleep(0.05)


def variables(run: Path) -> dict:
    """Every variable of the run's checkpoints/last/ (full tables: the shards joined)."""
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / "last" / checkpointing.PREFIX))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def history(run: Path):
    with open(run / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "eval_seconds")} for row in csv.DictReader(f)]


def scheduled(log: Path) -> dict:
    """pid -> [(epoch, step)] in the order that chief scheduled them."""
    out = {}
    for line in log.read_text().split("\n"):
        if line:
            pid, epoch, step = map(int, line.split())
            out.setdefault(pid, []).append((epoch, step))
    return out


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_chief_killed_mid_epoch_resumes_and_writes_every_slot_once_per_epoch(tmp_path):
    """The check that every element's trajectory slot is written exactly once
    per epoch, the epoch the chief died in included, has three parts:

    * the write counter (`CHIEF`'s `writes`) of the finished run is 1 for
      every (element, epoch). It lives and is restored with the table, so a
      restore that kept the dead chief's steps of its last epoch, or a
      resumed epoch that started past its first step, leaves 2 (written
      twice) or 0 (never written) for the elements of those steps;
    * the restarted chief scheduled each step of epochs [KILL_EPOCH, EPOCHS)
      once and nothing earlier: the epoch it died in ran again from its
      start, from the checkpoint of the epoch before (a chief that trained
      from scratch instead would also count 1 everywhere);
    * with one worker the steps run one after another in the order they are
      scheduled (the coordinator's worker thread runs a closure to its end
      before taking the next), so the run is deterministic: the trajectory
      table, the embeddings, the optimizer's slots and step count and the
      history rows must equal (`==`) those of an uninterrupted run on the
      same cluster. A step applied twice, or a slot written with a score of
      another epoch, changes them.
    """
    data = write_lightgcn(tmp_path / "board", *checkerboard(16))
    ref, run, log, steps = tmp_path / "ref", tmp_path / "run", tmp_path / "chief.log", tmp_path / "steps.log"
    marker = tmp_path / "paused"
    cluster, procs = LocalCluster(tmp_path, workers=1, ps=2), []
    try:
        cluster.start_all()
        procs.append(start_chief(cluster, ["--dataset", str(data), *ARGS, "--output-dir", str(ref)], log,
                                 STEPS_LOG=str(tmp_path / "ref-steps.log")))
        assert procs[-1].wait(timeout=300) == 0, log.read_text()[-2000:]

        procs.append(start_chief(cluster, ["--dataset", str(data), *ARGS, "--output-dir", str(run)], log,
                                 STEPS_LOG=str(steps), PAUSE_AT=f"{KILL_EPOCH} {KILL_STEP}",
                                 PAUSE_MARKER=str(marker)))
        wait_for(marker, procs[-1], log)
        procs[-1].send_signal(signal.SIGKILL)
        assert procs[-1].wait(timeout=60) == -signal.SIGKILL
        at_kill = checkpointing.read_meta(run / "checkpoints" / "last")
        assert at_kill["epoch"] == KILL_EPOCH and "batches" not in at_kill
        assert checkpointing.problem(run / "checkpoints" / "last") is None    # the checkpoint resumed from

        procs.append(start_chief(cluster, ["--resume", str(run)], log, STEPS_LOG=str(steps)))
        assert procs[-1].wait(timeout=300) == 0, log.read_text()[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        cluster.stop()

    assert f"resuming {run} after epoch {KILL_EPOCH} of {EPOCHS}" in log.read_text()
    first, second = scheduled(steps).values()
    every = [(e, s) for e in range(EPOCHS) for s in range(STEPS)]
    assert first == every[:KILL_EPOCH * STEPS + KILL_STEP + 1]
    assert second == every[KILL_EPOCH * STEPS:]

    got, want = variables(run), variables(ref)
    writes = got["model/trajectory/writes/.ATTRIBUTES/VARIABLE_VALUE"]
    assert writes.shape == (ROWS, EPOCHS) and np.all(writes == 1.0), np.argwhere(writes != 1.0)
    assert sorted(got) == sorted(want)
    assert not [name for name in got if not np.array_equal(got[name], want[name])]
    assert history(run) == history(ref) and len(history(run)) == EPOCHS

    assert not [p for p in run.rglob("*") if ".tmp" in p.name], "a half-written file was left"
    for folder in ("last", ".last.old", "best"):
        assert checkpointing.problem(run / "checkpoints" / folder) is None, folder
    assert json.loads((run / "metrics.json").read_text())["final"]["epoch"] == EPOCHS


def test_a_chief_whose_tasks_do_not_answer_names_them_and_starts_no_run(tiny_folder, tmp_path, monkeypatch,
                                                                        capsys):
    """Nothing listens at the cluster's addresses: TensorFlow would retry for
    minutes without a word; the chief stops after `CONNECT_WAIT_S` instead."""
    from tf_sharpcf.cli.fit import main
    chief, worker, ps0, ps1 = (f"127.0.0.1:{port}" for port in ps_cluster.free_local_ports(4))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": [chief], "worker": [worker], "ps": [ps0, ps1]},
                                                "task": {"type": "chief", "index": 0}}))
    monkeypatch.setattr(ps_cluster, "CONNECT_WAIT_S", 1.0)
    monkeypatch.setattr(strategy_module, "_strategies", {})     # a strategy of an earlier test's cluster
    out = tmp_path / "run"
    args = ["--dataset", str(tiny_folder), "--strategy", "parameter-server", "--quiet", "--output-dir", str(out)]
    assert main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: the chief cannot start: ps task 0 ({ps0}), ps task 1 ({ps1}), "
                          f"worker task 0 ({worker}) did not answer within 1 s"), err
    assert "fit --resume" in err
    assert not run_dir.is_started(out)
    assert main(args) == 3          # the same command again: not refused as an unfinished run
    assert "the chief cannot start" in capsys.readouterr().err


def test_a_second_cluster_in_one_process_is_refused_not_trained_on_the_first(monkeypatch):
    """TensorFlow connects a process to one cluster: a run whose TF_CONFIG
    names another one must not reuse the first cluster's strategy; a later
    run without TF_CONFIG (in the same process) reuses it."""
    first = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    second = {**first, "ps": ["127.0.0.1:4"]}
    marker = object()
    monkeypatch.setattr(strategy_module, "_strategies", {"parameter-server": marker,
                                                          strategy_module._CLUSTER: first})
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": first, "task": {"type": "chief", "index": 0}}))
    assert strategy_module.make_strategy("parameter-server") is marker
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": second, "task": {"type": "chief", "index": 0}}))
    with pytest.raises(ConfigError, match=r"connected to .*127.0.0.1:3.*new process"):
        strategy_module.make_strategy("parameter-server")
    monkeypatch.delenv("TF_CONFIG")
    assert strategy_module.make_strategy("parameter-server") is marker
