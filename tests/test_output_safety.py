"""Clear errors and no half-written outputs: a non-finite loss, a full disk,
an output folder that cannot be written, and runs that must not be clobbered."""
import builtins
import csv
import errno
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_lightgcn
from tf_sharpcf.training import callbacks, checkpointing, run_dir, train
from tf_sharpcf.cli.fit import main

FAST = ["--dim", "8", "--batch-size", "32", "--steps-per-execution", "2", "--no-jit", "--quiet"]


def run_args(folder, out, *extra):
    return ["--dataset", str(folder), "--method", "bpr", "--epochs", "2", "--eval-every", "1",
            "--output-dir", str(out), *FAST, *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run, trained once for the module; copy it before changing it."""
    root = tmp_path_factory.mktemp("finished")
    rng = np.random.default_rng(0)
    train_rows, test_rows = {}, {}
    for u in range(30):
        items = rng.choice(40, size=8, replace=False)
        train_rows[u], test_rows[u] = items[:6].tolist(), items[6:].tolist()
    folder = write_lightgcn(root / "tiny", train_rows, test_rows)
    assert main(run_args(folder, root / "run")) == 0
    return root / "run"


def snapshot(out):
    """{relative path: bytes} of every file in the run folder."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# Non-finite loss


def test_an_injected_nan_stops_training_naming_the_epoch_and_keeps_the_last_checkpoint(
        tiny_folder, tmp_path, capsys, monkeypatch):
    begin = callbacks.EpochCounter.on_epoch_begin

    def poison_epoch_3(self, epoch, logs=None):
        begin(self, epoch, logs)
        if epoch == 2:      # 0-based: the third epoch trains from a NaN user row
            self.model.user_embedding[0].assign(tf.fill([8], float("nan")))
    monkeypatch.setattr(callbacks.EpochCounter, "on_epoch_begin", poison_epoch_3)
    out = tmp_path / "run"
    assert main(run_args(tiny_folder, out, "--epochs", "3")) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: training stopped: non-finite loss (nan) in epoch 3 (batches ")
    assert f"the last good checkpoint is {out / 'checkpoints' / 'last'} (epoch 2)" in err
    assert not (out / "metrics.json").exists()
    assert [r["epoch"] for r in csv.DictReader(open(out / "history.csv"))] == ["1", "2"]
    assert checkpointing.read_meta(out / "checkpoints" / "last")["epoch"] == 2
    reader = tf.train.load_checkpoint(str(out / "checkpoints" / "last" / "ckpt"))
    for name in reader.get_variable_to_shape_map():
        if name.startswith(("model/", "optimizer/")) and "OBJECT_GRAPH" not in name:
            assert np.all(np.isfinite(reader.get_tensor(name))), name


def test_a_diverging_learning_rate_fails_with_exit_code_3_and_a_one_line_error(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(run_args(tiny_folder, out, "--optimizer", "sgd", "--lr", "1e30"))
    err = capsys.readouterr().err
    assert code == 3
    assert "error: training stopped: non-finite loss" in err and "in epoch 1 (batches 1-2 of 6)" in err
    assert "no training checkpoint was written yet" in err and "Traceback" not in err
    assert not (out / "metrics.json").exists() and not (out / "checkpoints" / "last").exists()


# ---------------------------------------------------------------------------
# Disk full


class DiskFull:
    """Makes writes to files whose name contains `target` fail with ENOSPC
    after a few bytes, like a disk filling up in the middle of a file."""

    def __init__(self, monkeypatch, target):
        self.target, self.hits = target, 0
        real_open = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if ("w" in mode or "a" in mode) and self.matches(file):
                self.hits += 1
                return _FullFile(f)
            return f
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)

        real_write = tf.train.Checkpoint.write

        def fake_write(ckpt, prefix, *args, **kwargs):
            path = real_write(ckpt, prefix, *args, **kwargs)
            if self.matches(prefix):
                self.hits += 1
                raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}.data-00000-of-00001; "
                                                                   "No space left on device")
            return path
        monkeypatch.setattr(tf.train.Checkpoint, "write", fake_write)

    def matches(self, path) -> bool:
        """The target is in the file's name or its folder's (`.last.tmp/ckpt`)."""
        return any(self.target in part for part in Path(path).parts[-2:])


class _FullFile:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("target", ["history.csv", "last", "metrics.json"])
def test_a_full_disk_leaves_the_previous_files_intact_with_a_clear_error(finished_run, tmp_path, capsys,
                                                                         monkeypatch, target):
    out = shutil.copytree(finished_run, tmp_path / "run")
    before = snapshot(out)
    fault = DiskFull(monkeypatch, target)
    code = main(["--resume", str(out), "--epochs", "3", "--quiet"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 3 and fault.hits == 1, err
    assert "error: could not write" in err and "No space left on device" in err and target in err
    after = snapshot(out)
    names = {"history.csv": ["history.csv"], "metrics.json": ["metrics.json"],
             "last": [n for n in before if n.startswith("checkpoints/last/")]}[target]
    for name in names:
        assert after.get(name) == before[name], name
    assert not [p for p in out.rglob("*.tmp*")], "a temporary file was left behind"
    # whatever was written is still a consistent run to resume
    assert main(["--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["final"]["epoch"] == 3


def test_a_full_disk_while_saving_embeddings_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "user_embeddings.npy"
    run_dir.atomic_save_npy(path, np.ones((3, 2), np.float32))
    fault = DiskFull(monkeypatch, "user_embeddings")
    with pytest.raises(run_dir.WriteError, match="No space left on device"):
        run_dir.atomic_save_npy(path, np.zeros((3, 2), np.float32))
    monkeypatch.undo()
    assert fault.hits == 1
    np.testing.assert_array_equal(np.load(path), np.ones((3, 2)))
    assert [p.name for p in tmp_path.iterdir()] == ["user_embeddings.npy"]


# ---------------------------------------------------------------------------
# Output folder


def no_data_loading(monkeypatch):
    monkeypatch.setattr(train, "load_data", lambda config: pytest.fail("loaded data before checking --output-dir"))


def test_a_missing_parent_folder_is_an_error_before_loading_data(tiny_folder, tmp_path, capsys, monkeypatch):
    no_data_loading(monkeypatch)
    out = tmp_path / "no" / "such" / "run"
    assert main(run_args(tiny_folder, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid --output-dir: ") and "parent folder" in err and "does not exist" in err
    assert not (tmp_path / "no").exists()


def test_an_unwritable_output_dir_is_an_error_before_loading_data(tiny_folder, tmp_path, capsys, monkeypatch):
    no_data_loading(monkeypatch)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(run_dir.tempfile, "mkstemp", denied)
    out = tmp_path / "run"
    out.mkdir()
    assert main(run_args(tiny_folder, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid --output-dir: {out} is not writable: Permission denied")


def test_an_output_dir_that_is_a_file_is_an_error(tiny_folder, tmp_path, capsys, monkeypatch):
    no_data_loading(monkeypatch)
    out = tmp_path / "run"
    out.write_text("x")
    assert main(run_args(tiny_folder, out)) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_the_writability_probe_leaves_nothing_behind(tmp_path):
    run_dir.check_writable(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_refuses_an_unfinished_one_and_overwrite_starts_over(tiny_folder, finished_run, tmp_path,
                                                                       capsys):
    out = shutil.copytree(finished_run, tmp_path / "run")
    (out / "metrics.json").unlink()                     # as if killed before the end
    before = snapshot(out)
    assert main(run_args(tiny_folder, out)) == 2
    err = capsys.readouterr().err
    assert "holds an unfinished run" in err and f"--resume {out}" in err and "--overwrite" in err
    assert snapshot(out) == before
    (out / "notes.txt").write_text("mine")
    old_events = {p.name for p in (out / "tensorboard").iterdir()}
    assert main(run_args(tiny_folder, out, "--epochs", "1", "--overwrite")) == 0
    assert not old_events & {p.name for p in (out / "tensorboard").iterdir()}
    assert json.loads((out / "metrics.json").read_text())["final"]["epoch"] == 1
    assert checkpointing.read_meta(out / "checkpoints" / "last")["epoch"] == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_cannot_be_combined_with_overwrite(finished_run, capsys):
    out = finished_run
    before = snapshot(out)
    assert main(["--resume", str(out), "--overwrite"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_failing_tensorboard_writer_is_a_write_error(finished_run, tmp_path, capsys, monkeypatch):
    out = shutil.copytree(finished_run, tmp_path / "run")

    def full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    monkeypatch.setattr(tf.summary, "create_file_writer", full)
    assert main(["--resume", str(out), "--epochs", "3", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert f"error: could not write {out / 'tensorboard'}: No space left on device" in err


def _record_syncs(monkeypatch):
    """-> list of ("fsync", path) and ("replace", src, dst) in call order."""
    import os as _os
    events = []
    real_fsync, real_replace = _os.fsync, _os.replace

    def fsync(fd):
        events.append(("fsync", _os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)
    monkeypatch.setattr(_os, "fsync", fsync)
    monkeypatch.setattr(_os, "replace", replace)
    return events


def test_atomic_writes_fsync_the_file_before_and_the_folder_after_the_rename(tmp_path, monkeypatch):
    from tf_sharpcf.training import run_dir
    events = _record_syncs(monkeypatch)
    run_dir.atomic_write_text(tmp_path / "metrics.json", "{}")
    tmp = str(tmp_path / ".metrics.json.tmp")
    assert events == [("fsync", tmp), ("replace", tmp, str(tmp_path / "metrics.json")), ("fsync", str(tmp_path))]


def test_a_checkpoint_is_on_disk_before_it_replaces_the_last_one(tmp_path, monkeypatch):
    import tensorflow as tf
    from tf_sharpcf.training import checkpointing
    model = tf.Module()
    model.v = tf.Variable([1.0, 2.0])
    checkpointing.write(tmp_path / "last", model, meta={"epoch": 1})
    events = _record_syncs(monkeypatch)
    checkpointing.write(tmp_path / "last", model, meta={"epoch": 2})
    tmp = str(tmp_path / ".last.tmp")
    synced = [e[1] for e in events[:events.index(("replace", str(tmp_path / "last"), str(tmp_path / ".last.old")))]]
    assert f"{tmp}/meta.json" in synced and f"{tmp}/ckpt.index" in synced and synced[-1] == tmp
    assert events[-1] == ("fsync", str(tmp_path))
    assert checkpointing.read_meta(tmp_path / "last")["epoch"] == 2
