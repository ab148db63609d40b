"""`fit --resume`: a run killed at any point and resumed ends exactly like an
uninterrupted run with the same seed.

The main test kills a `tf_sharpcf.fit` subprocess with SIGKILL at a point
drawn at random: after any chunk of batches of an epoch, or between an
epoch's history row and its checkpoint. The subprocess wraps two callbacks so
that, at the point named by $PAUSE_AT, they write a marker file and sleep
until killed, so the kill lands exactly there and the test cannot flake. The
other tests stop an in-process run at a chosen point by raising an exception
nothing catches, which leaves the files as a kill would. Resumes that should
finish run in this process.

Tolerance: none. On CPU every op of the step is deterministic for a fixed
thread pool, each epoch's batches are a pure function of (seed, epoch), and the
checkpoint restores every variable bit for bit, so embeddings, optimizer slots,
the trajectory table and all metrics are compared with `==`.
"""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator

from conftest import write_lightgcn
from tf_sharpcf.training import callbacks, checkpointing
from tf_sharpcf.cli import fit
from tf_sharpcf.cli.fit import main

pytestmark = pytest.mark.subprocess

REPO = Path(__file__).resolve().parents[1]
FAST = ["--dim", "8", "--batch-size", "32", "--steps-per-execution", "2", "--no-jit", "--quiet"]
SHARPCF = ["--method", "sharpcf", "--epochs", "8", "--warmup-epochs", "3", "--window", "2", "--eval-every", "2",
           *FAST]
BPR = ["--method", "bpr", "--epochs", "4", "--eval-every", "2", *FAST]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """30 users x 6 training items: 180 interactions = 5 batches of 32 and one
    of 20 per epoch, trained in chunks of 2, 2, 1 and 1 batches."""
    rng = np.random.default_rng(0)
    train, test = {}, {}
    for u in range(30):
        items = rng.choice(40, size=8, replace=False)
        train[u], test[u] = items[:6].tolist(), items[6:].tolist()
    return write_lightgcn(tmp_path_factory.mktemp("data") / "tiny", train, test)


def reference(tiny, tmp_path_factory, args):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["--dataset", str(tiny), *args, "--output-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sharpcf_ref(tiny, tmp_path_factory):
    return reference(tiny, tmp_path_factory, SHARPCF)


@pytest.fixture(scope="module")
def bpr_ref(tiny, tmp_path_factory):
    return reference(tiny, tmp_path_factory, BPR)

PAUSABLE_FIT = r'''
import os, sys, time
import tf_sharpcf
from tf_sharpcf.training import callbacks
from tf_sharpcf.cli import fit

def reached(point):
    if os.environ.get("PAUSE_AT") == point:
        open(os.environ["PAUSE_MARKER"], "w").write(point)
        time.sleep(300)                       # killed here

chunk_end = callbacks.StopOnNonFiniteLoss.on_train_batch_end
def on_train_batch_end(self, batch, logs=None):
    chunk_end(self, batch, logs)
    reached(f"epoch {self._epoch + 1} chunk {batch + 1}")
callbacks.StopOnNonFiniteLoss.on_train_batch_end = on_train_batch_end

save = callbacks.LastCheckpoint.on_epoch_end
def on_epoch_end(self, epoch, logs=None):
    reached(f"epoch {epoch + 1} before checkpoint")
    save(self, epoch, logs)
callbacks.LastCheckpoint.on_epoch_end = on_epoch_end

sys.exit(fit.main(sys.argv[1:]))
'''


def start_fit(args, tmp_path, **env):
    return subprocess.Popen([sys.executable, "-c", PAUSABLE_FIT, *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env},
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "fit.log", "a"))


def wait_for(path: Path, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"fit exited ({proc.returncode}) before {path.name}: see fit.log")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {path.name}")
        time.sleep(0.05)


def kill_at(point: str, args, tmp_path):
    """Runs fit in a subprocess and SIGKILLs it when it reaches `point`."""
    marker = tmp_path / f"paused-{point.replace(' ', '-')}"
    proc = start_fit(args, tmp_path, PAUSE_AT=point, PAUSE_MARKER=str(marker))
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def history(out):
    return [{k: v for k, v in r.items() if k not in ("seconds", "eval_seconds")}
            for r in csv.DictReader(open(out / "history.csv"))]


def tensorboard_losses(out):
    acc = plugin_event_accumulator.EventAccumulator(str(out / "tensorboard"),
                                                    size_guidance={plugin_event_accumulator.TENSORS: 0})
    acc.Reload()
    return [(e.step, tf.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors("loss")]


def checkpoint_variables(folder):
    reader = tf.train.load_checkpoint(str(folder / checkpointing.PREFIX))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "OBJECT_GRAPH" not in name}


def assert_same_array(got, want, name):
    """Equal arrays; float ones may differ by float32 rounding (rtol 1e-6).

    Resumed runs are bit-identical in every local run, but TensorFlow's CPU
    kernels do not promise it: CI once saw 4 of 240 APR weights 1 ulp apart
    (2026-12-03). A wrong resume (a batch skipped or trained twice, other
    negatives, lost optimizer slots) moves weights by ~lr · grad, far more."""
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype.kind == "f" and not np.array_equal(got, want):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


def assert_same_run(out, ref):
    got, want = json.loads((out / "metrics.json").read_text()), json.loads((ref / "metrics.json").read_text())
    assert got["best"] == want["best"] and got["final"] == want["final"] and got["epochs"] == want["epochs"]
    got_rows, want_rows = history(out), history(ref)
    assert [sorted(r) for r in got_rows] == [sorted(r) for r in want_rows]
    for key in want_rows[0] if want_rows else ():
        column = [[r[key] for r in rows] for rows in (got_rows, want_rows)]
        if column[0] != column[1]:
            assert_same_array(*[np.array(c, dtype=float) for c in column], f"history.csv {key}")
    for name in ("user_embeddings.npy", "item_embeddings.npy"):
        assert_same_array(np.load(out / name), np.load(ref / name), name)
    last, ref_last = checkpoint_variables(out / "checkpoints" / "last"), \
        checkpoint_variables(ref / "checkpoints" / "last")
    assert sorted(last) == sorted(ref_last)
    for name in ref_last:                      # weights, optimizer slots and step, trajectory, epoch
        assert_same_array(last[name], ref_last[name], name)
    losses = tensorboard_losses(out)
    assert [step for step, _ in losses] == list(range(1, want["epochs"] + 1))
    ref_losses = tensorboard_losses(ref)
    assert [step for step, _ in ref_losses] == [step for step, _ in losses]
    assert_same_array([loss for _, loss in losses], [loss for _, loss in ref_losses], "tensorboard losses")


def test_sharpcf_killed_at_a_random_point_resumes_bit_exactly(tiny, sharpcf_ref, tmp_path):
    rng = random.Random()                    # not the `random` module, which training seeds
    epoch = rng.randint(2, 7)                # in the warm-up (2, 3) or with the trajectory term on
    point = rng.choice([*(f"epoch {epoch} chunk {c}" for c in range(1, 5)), f"epoch {epoch} before checkpoint"])
    print(f"killed at {point}")
    out = tmp_path / "run"
    kill_at(point, ["--dataset", str(tiny), *SHARPCF, "--output-dir", str(out)], tmp_path)
    assert checkpointing.read_meta(out / "checkpoints" / "last")["epoch"] == epoch - 1, point
    assert len(history(out)) == epoch - ("chunk" in point), point
    assert main(["--resume", str(out), "--quiet"]) == 0, point
    assert_same_run(out, sharpcf_ref)


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the package catches it."""


def test_apr_checkpointed_every_3_epochs_replays_the_epochs_after_the_checkpoint(tiny, tmp_path, monkeypatch):
    args = ["--dataset", str(tiny), "--method", "apr", "--optimizer", "adagrad", "--lr", "50", "--epochs", "7",
            "--warmup-epochs", "2", "--eval-every", "2", "--checkpoint-every", "3", *FAST]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main([*args, "--output-dir", str(ref)]) == 0

    chunk_end = callbacks.StopOnNonFiniteLoss.on_train_batch_end

    def killed_in_epoch_5(self, batch, logs=None):
        chunk_end(self, batch, logs)
        if (self._epoch, batch) == (4, 2):
            raise Killed
    monkeypatch.setattr(callbacks.StopOnNonFiniteLoss, "on_train_batch_end", killed_in_epoch_5)
    with pytest.raises(Killed):
        main([*args, "--output-dir", str(out)])
    monkeypatch.undo()
    assert checkpointing.read_meta(out / "checkpoints" / "last")["epoch"] == 3
    assert len(history(out)) == 4                     # epoch 4 trained after the checkpoint
    assert main(["--resume", str(out), "--quiet"]) == 0
    assert_same_run(out, ref)


@pytest.mark.parametrize("cut", ["while writing", "between the renames"])
def test_a_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint_usable(tiny, bpr_ref, tmp_path,
                                                                              monkeypatch, cut):
    args = ["--dataset", str(tiny), *BPR]
    out = tmp_path / "run"

    saves = []
    real_write, real_replace = tf.train.Checkpoint.write, os.replace

    def write(ckpt, prefix, *a, **k):
        path = real_write(ckpt, prefix, *a, **k)
        saves.append(prefix)
        if cut == "while writing" and ".last.tmp" in prefix and len([s for s in saves if ".last" in s]) == 3:
            raise Killed
        return path

    def replace(src, dst):
        if cut == "between the renames" and Path(src).name == ".last.tmp" and \
                len([s for s in saves if ".last" in s]) == 3:
            raise Killed                     # last/ already moved to .last.old/
        return real_replace(src, dst)
    monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    monkeypatch.setattr(checkpointing.os, "replace", replace)
    with pytest.raises(Killed):
        main([*args, "--output-dir", str(out)])
    monkeypatch.undo()

    left = {p.name for p in (out / "checkpoints").iterdir()}
    if cut == "while writing":
        assert left >= {"last", ".last.tmp"}
    else:
        assert "last" not in left and left >= {".last.old", ".last.tmp"}
    assert checkpointing.read_meta(checkpointing.find(out / "checkpoints" / "last"))["epoch"] == 2
    assert main(["--resume", str(out), "--quiet"]) == 0
    # no half-written save left; the previous checkpoints are kept as .old
    assert not {p.name for p in (out / "checkpoints").iterdir()} - {"best", "last", ".best.old", ".last.old"}
    assert_same_run(out, bpr_ref)


def test_a_finished_run_continues_with_more_epochs(tiny, sharpcf_ref, tmp_path):
    out = tmp_path / "run"
    assert main(["--dataset", str(tiny), *SHARPCF, "--epochs", "5", "--output-dir", str(out)]) == 0
    finished = (out / "metrics.json").read_text()
    assert main(["--resume", str(out), "--quiet"]) == 0               # nothing left to train
    assert (out / "metrics.json").read_text() == finished
    assert main(["--resume", str(out), "--epochs", "8", "--quiet"]) == 0
    ref = sharpcf_ref
    # epoch 5 was evaluated as the last epoch of the short run: the one row that differs
    rows, ref_rows = history(out), history(ref)
    assert rows[:4] == ref_rows[:4] and rows[5:] == ref_rows[5:] and rows[4]["loss"] == ref_rows[4]["loss"]
    last, ref_last = checkpoint_variables(out / "checkpoints" / "last"), \
        checkpoint_variables(ref / "checkpoints" / "last")
    for name in ref_last:
        assert_same_array(last[name], ref_last[name], name)
    assert json.loads((out / "metrics.json").read_text())["final"] == \
        json.loads((ref / "metrics.json").read_text())["final"]
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 8


# ---------------------------------------------------------------------------
# Which flags --resume accepts (no training)


@pytest.fixture
def stored_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = fit.Config().replace(data={"dataset": "somewhere"}, train={"epochs": 10, "lr": 0.01})
    (out / "config.json").write_text(config.to_json())
    return out


def resume_config(*argv):
    return fit.config_from_args(fit.build_parser().parse_args(list(argv)))


def test_resume_takes_the_runs_config_and_may_grow_epochs(stored_run):
    config = resume_config("--resume", str(stored_run), "--epochs", "20", "--lr", "0.01", "--data-dir", "/x",
                           "--checkpoint-every", "5")
    assert config.train.epochs == 20 and config.train.lr == 0.01 and config.data.dataset == "somewhere"
    assert config.data.data_dir == "/x" and config.train.checkpoint_every == 5
    assert resume_config("--resume", str(stored_run)).train.epochs == 10


@pytest.mark.parametrize("flags,message", [
    (["--lr", "0.02"], "--lr (given 0.02, the run has 0.01)"),
    (["--lambda", "1"], "--lambda (given 1.0, the run has 0.1)"),
    (["--no-jit"], "--no-jit (given False, the run has True)"),
    (["--epochs", "9"], "--epochs may only grow when resuming, got 9"),
    (["--config", "x.json"], "invalid --config: not with --resume"),
    (["--overwrite"], "invalid --overwrite: not with --resume"),
    (["--output-dir", "elsewhere"], "invalid --output-dir: --resume continues the run in"),
])
def test_resume_rejects_flags_that_change_the_run(stored_run, flags, message):
    with pytest.raises(fit.ConfigError) as e:
        resume_config("--resume", str(stored_run), *flags)
    assert message in str(e.value)


def test_resume_of_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["--resume", str(tmp_path)]) == 2
    assert f"invalid --resume: {tmp_path} holds no run (config.json missing)" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "delete the index"])
def test_a_damaged_last_checkpoint_resumes_from_the_previous_one_with_a_warning(tiny, bpr_ref, tmp_path, damage):
    """meta.json records each file's size and CRC-32: a truncated, changed or
    incomplete checkpoints/last makes --resume take .last.old (one epoch
    earlier) with a warning naming both; the run still ends bit-identical."""
    out = tmp_path / "run"
    assert main(["--dataset", str(tiny), *BPR, "--output-dir", str(out)]) == 0
    (out / "metrics.json").unlink()                          # as if killed after its last save
    last = out / "checkpoints" / "last"
    data = next(last.glob(f"{checkpointing.PREFIX}.data-*"))
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:-7])
    elif damage == "flip a byte":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        (last / f"{checkpointing.PREFIX}.index").unlink()
    previous = checkpointing.read_meta(out / "checkpoints" / ".last.old")["epoch"]
    assert previous == checkpointing.read_meta(last)["epoch"] - 1
    with pytest.warns(UserWarning, match=r"checkpoint .*last .*: using the previous one, .*\.last\.old"):
        assert main(["--resume", str(out), "--quiet"]) == 0
    assert_same_run(out, bpr_ref)


def test_resume_with_no_usable_checkpoint_is_a_clear_error(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--dataset", str(tiny), *BPR, "--output-dir", str(out)]) == 0
    (out / "metrics.json").unlink()
    capsys.readouterr()
    for folder in ("last", ".last.old"):
        (out / "checkpoints" / folder / f"{checkpointing.PREFIX}.index").unlink()
    assert main(["--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: ") and "no usable checkpoint" in err and ".last.old incomplete" in err
