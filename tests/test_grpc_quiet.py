"""No gRPC noise after our last line: a chief whose cluster lost a server
exits without TensorFlow's `Failed to remove function remotely` lines
(`cluster.release_nothing_at_exit`)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, checkerboard, write_lightgcn
from tf_sharpcf.distribute.local_cluster import LocalCluster


def _checkpointed_epochs(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "last" / "meta.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


CHIEF = """
import sys
from tf_sharpcf.config import Config
from tf_sharpcf.training.train import train_and_evaluate
import os, signal, time
config = Config().replace(
    data={"dataset": sys.argv[1]}, model={"dim": 8}, eval={"ks": (1,), "eval_every": 1000},
    train={"method": "bpr", "epochs": 2, "warmup_epochs": 0, "batch_size": 16, "strategy": "parameter-server"})
train_and_evaluate(config, sys.argv[2], verbose=0)
os.kill(int(sys.argv[3]), signal.SIGKILL)      # the cluster loses its parameter server
time.sleep(1)
print("our last line", file=sys.stderr, flush=True)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_chief_exits_after_its_last_line_without_removing_functions_remotely(tmp_path):
    """The trained model's functions are freed at exit (Keras's reference
    cycles); without `release_nothing_at_exit` each one logs three lines per
    lost server after "our last line"."""
    data = write_lightgcn(tmp_path / "board", *checkerboard(8))
    cluster = LocalCluster(tmp_path, workers=1, ps=1).start_all()
    try:
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        env.update(PYTHONPATH=str(REPO), TF_CONFIG=cluster.tf_config("chief", 0))
        done = subprocess.run([sys.executable, "-c", CHIEF, str(data), str(tmp_path / "run"),
                               str(cluster.procs["ps", 0].pid)], env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        cluster.stop()
    assert done.returncode == 0, done.stderr
    assert done.stderr.rstrip("\n").endswith("our last line"), done.stderr
    assert "Failed to remove function remotely" not in done.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_run_that_loses_its_parameter_server_ends_with_our_error_message(tmp_path):
    data = write_lightgcn(tmp_path / "board", *checkerboard(8))
    run = tmp_path / "run"
    cluster = LocalCluster(tmp_path, workers=1, ps=1).start_all()
    try:
        # the native log level as a user has it (not set): the chief's own default
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        env.update(PYTHONPATH=str(REPO), TF_CONFIG=cluster.tf_config("chief", 0))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tf_sharpcf.fit", "--dataset", str(data), "--method", "bpr", "--epochs", "40",
             "--warmup-epochs", "0", "--dim", "8", "--batch-size", "16", "--strategy", "parameter-server",
             "--eval-every", "1000", "--k", "1", "--quiet", "--output-dir", str(run)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while _checkpointed_epochs(run) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        cluster.kill("ps", 0)
        _, err = proc.communicate(timeout=240)
    finally:
        cluster.stop()
    assert proc.returncode == 3, err
    lines = err.rstrip("\n").splitlines()
    ours = [i for i, line in enumerate(lines) if line.startswith("error: ") and "the cluster lost" in line]
    assert ours, err
    assert "last good checkpoint is" in "\n".join(lines[ours[-1]:]), err
    after = lines[ours[-1] + 1:]
    # (TensorFlow may log a few such lines before ours, while the error unwinds
    # through Keras's fit; `cluster.close_native_log` silences every one after it)
    assert not [line for line in after if "E0000" in line or "GRPC" in line or "remote" in line], err


CLOSE = """
import os, sys
from tf_sharpcf.distribute import cluster
print("python before", file=sys.stderr, flush=True)
os.write(2, b"native before\\n")
cluster.close_native_log()
os.write(2, b"native after\\n")      # what TensorFlow's C++ log does
print("python after", file=sys.stderr, flush=True)
import warnings; warnings.warn("a warning after")
"""


@pytest.mark.subprocess
def test_close_native_log_silences_file_descriptor_2_and_keeps_pythons_stderr(tmp_path):
    done = subprocess.run([sys.executable, "-c", CLOSE], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "before" in line or "after" in line]
    assert lines[:3] == ["python before", "native before", "python after"], done.stderr
    assert "native after" not in done.stderr
    assert "a warning after" in done.stderr


def test_a_server_gone_is_told_from_a_failed_write_by_class_or_by_grpcs_words():
    """gRPC's "cannot reach it" may come as an UnknownError (it did, from a
    checkpoint's read of a killed ps's variables): a lost server, not a write
    that failed; a full disk stays a write error."""
    import tensorflow as tf
    from tf_sharpcf.training.checkpointing import is_lost_peer
    gone = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    assert is_lost_peer(tf.errors.UnknownError(None, None, gone))
    assert is_lost_peer(tf.errors.UnavailableError(None, None, "recvmsg:Connection reset by peer"))
    assert is_lost_peer(tf.errors.CancelledError(None, None, "cancelled"))
    assert not is_lost_peer(tf.errors.ResourceExhaustedError(None, None, "No space left on device"))
    assert not is_lost_peer(tf.errors.UnknownError(None, None, "could not rename"))
    assert not is_lost_peer(OSError(gone))


def test_a_destructors_lost_server_error_is_not_printed_and_any_other_is(monkeypatch):
    """`quiet_lost_peer_destructors`: the unraisable `UnavailableError` of an
    executor freed after a ps died (it printed around our error in CI) goes
    unprinted; any other unraisable exception reaches the previous hook."""
    import tensorflow as tf
    from tf_sharpcf.distribute import cluster
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    monkeypatch.setattr(cluster, "_UNRAISABLE_QUIET", False)
    cluster.quiet_lost_peer_destructors()
    cluster.quiet_lost_peer_destructors()      # once: a second call wraps nothing
    lost = tf.errors.UnavailableError(None, None, "recvmsg:Connection reset by peer")
    other = ValueError("a destructor's own bug")
    for value in (lost, other):
        sys.unraisablehook(type("U", (), {"exc_type": type(value), "exc_value": value,
                                          "exc_traceback": None, "err_msg": None, "object": None})())
    assert seen == [other]
