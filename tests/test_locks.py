"""One process per run folder, search project and experiment: a second process
is refused with a message naming the first; a lock left by a dead process is
taken over with a warning. Real processes hold the locks."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tf_sharpcf.training import run_dir

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from pathlib import Path
from tf_sharpcf.training import run_dir
with run_dir.FolderLock(Path(sys.argv[1]), Path(sys.argv[2]), "--output-dir"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """Starts a process that holds a lock until the test ends; -> start(lock_file, folder) -> pid."""
    procs = []

    def start(lock_file: Path, folder: Path) -> int:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file), str(folder)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


def test_a_second_fit_on_a_run_folder_in_use_is_refused(tiny_folder, tmp_path, holder, capsys):
    from tf_sharpcf.cli.fit import main
    out = tmp_path / "run"
    fast = ["--dataset", str(tiny_folder), "--dim", "4", "--batch-size", "64", "--no-jit", "--quiet",
            "--warmup-epochs", "0"]
    assert main([*fast, "--epochs", "1", "--output-dir", str(out)]) == 0
    pid = holder(out / run_dir.LOCK, out)
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["--resume", str(out), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: invalid --resume: ") and f"{out} is in use by process {pid} on " in err
    assert " since " in err
    assert (out / "metrics.json").read_text() == before          # the holder's run is untouched


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tiny_folder, tmp_path):
    from tf_sharpcf.cli.fit import main
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / run_dir.LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": "elsewhere", "since": "then"}))
    with pytest.warns(UserWarning, match=rf"taking over the lock left by process {int(dead.stdout)} on elsewhere"):
        assert main(["--dataset", str(tiny_folder), "--dim", "4", "--batch-size", "64", "--no-jit", "--quiet",
                     "--epochs", "1", "--warmup-epochs", "0", "--output-dir", str(out)]) == 0
    assert (out / "metrics.json").exists() and (out / run_dir.LOCK).read_text() == ""   # released


def test_a_second_pipeline_on_an_experiment_in_use_is_refused(tiny_folder, tmp_path, holder, capsys):
    from tf_sharpcf.cli.pipeline import main
    path = tmp_path / "e.toml"
    path.write_text(f'name = "tiny"\ndataset = "{tiny_folder}"\nmethods = ["bpr"]\nseeds = [0]\n'
                    "[common.train]\nepochs = 1\nwarmup_epochs = 0\n[common.model]\ndim = 4\n")
    root = tmp_path / "results" / "tiny"
    pid = holder(root / run_dir.LOCK, root)
    assert main([str(path), "--results-dir", str(tmp_path / "results"), "--quiet"]) == 2
    assert f"is in use by process {pid}" in capsys.readouterr().err
    assert not (root / "runs").exists()


def test_a_second_search_on_a_project_in_use_is_refused(tiny_folder, tmp_path, holder, capsys):
    from tf_sharpcf.cli.tune import main
    directory = tmp_path / "tuning"
    pid = holder(directory / ".p.lock", directory / "p")
    assert main(["--dataset", str(tiny_folder), "--method", "bpr", "--epochs", "2", "--warmup-epochs", "0",
                 "--directory", str(directory), "--project-name", "p", "--max-trials", "1", "--quiet"]) == 2
    assert f"is in use by process {pid}" in capsys.readouterr().err
    assert not (directory / "p").exists()
