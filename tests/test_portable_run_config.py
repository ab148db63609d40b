"""A run's config.json names its data directory relative to the run folder,
and every reader finds the data from any working directory; a config.json
written before that (data_dir relative to where `fit` ran) keeps its meaning."""
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, write_lightgcn
from tf_sharpcf.config import Config
from tf_sharpcf.training import run_dir

FAST = ["--dim", "8", "--batch-size", "64", "--no-jit"]


def _named_dataset(data_dir: Path) -> Path:
    """A stand-in for the registered name gowalla: <data_dir>/gowalla."""
    rows = {u: [(u + k) % 9 for k in range(4)] for u in range(8)}
    return write_lightgcn(data_dir / "gowalla", rows, {u: [(u + 5) % 9] for u in range(8)})


def _config(data_dir) -> Config:
    return Config().replace(data={"dataset": "gowalla", "data_dir": data_dir, "download": False},
                            model={"dim": 8}, train={"method": "bpr", "epochs": 1, "warmup_epochs": 0,
                                                     "batch_size": 64, "jit_compile": False})


# ---------------------------------------------------------------------------
# The path arithmetic


def test_relative_path_climbs_from_the_folder_to_the_target(tmp_path):
    # /t/work/runs/bpr -> /t/shared/data: up three (bpr, runs, work), then shared/data
    folder = tmp_path / "work" / "runs" / "bpr"
    assert run_dir.relative_path(str(tmp_path / "shared" / "data"), folder) == os.path.join(
        "..", "..", "..", "shared", "data")
    assert run_dir.relative_path(str(folder / "data"), folder) == "data"
    assert run_dir.relative_path(None, folder) is None


def test_a_relative_data_dir_is_read_from_the_working_directory(tmp_path, monkeypatch):
    # "../shared/data" typed in /t/main, run folder /t/main/runs/bpr -> "../../../shared/data"
    main = tmp_path / "main"
    main.mkdir()
    monkeypatch.chdir(main)
    assert run_dir.relative_path(os.path.join("..", "shared", "data"), Path("runs") / "bpr") == os.path.join(
        "..", "..", "..", "shared", "data")


# ---------------------------------------------------------------------------
# Written relative to the run, read back as a path


def test_config_json_stores_the_data_dir_relative_to_the_run_and_marked(tmp_path):
    data_dir = tmp_path / "shared" / "data"
    run = tmp_path / "work" / "run"
    run.mkdir(parents=True)
    run_dir.write_config(run, _config(str(data_dir)))
    text = (run / "config.json").read_text()
    stored = json.loads(text)["data"]["data_dir"]
    assert stored == run_dir.RUN_RELATIVE + os.path.join("..", "..", "shared", "data")
    assert str(tmp_path) not in text                              # no absolute path of this machine
    assert run_dir.read_config(run).data.data_dir == str(data_dir)
    assert Config.from_file(run / "config.json").train.method == "bpr"     # still a config file for fit --config


def test_no_data_dir_given_stays_none(tmp_path):
    run_dir.write_config(tmp_path, _config(None))
    assert json.loads((tmp_path / "config.json").read_text())["data"]["data_dir"] is None
    assert run_dir.read_config(tmp_path).data.data_dir is None


def test_a_run_moved_with_its_data_still_finds_it(tmp_path):
    old = tmp_path / "old"
    (old / "run").mkdir(parents=True)
    run_dir.write_config(old / "run", _config(str(old / "data")))
    shutil.move(str(old), str(tmp_path / "new"))
    assert run_dir.read_config(tmp_path / "new" / "run").data.data_dir == str(tmp_path / "new" / "data")


def test_a_config_read_from_another_working_directory_names_the_same_folder(tmp_path, monkeypatch):
    (tmp_path / "a" / "runs" / "r").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    run_dir.write_config(Path("runs") / "r", _config("data"))          # typed relative to /t/a
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_dir.read_config(tmp_path / "a" / "runs" / "r").data.data_dir == str(tmp_path / "a" / "data")
    assert run_dir.read_config(Path("..") / "a" / "runs" / "r").data.data_dir == str(tmp_path / "a" / "data")


@pytest.mark.parametrize("old", ["../shared/data", "/work/shared/data"])
def test_an_unmarked_data_dir_keeps_its_old_meaning(tmp_path, old):
    """Written before the mark: relative to the working directory of that fit
    (the committed results' "../shared/data" is relative to the repository's
    root), or absolute; both are read as they were."""
    stored = json.loads(_config(None).to_json())
    stored["data"]["data_dir"] = old
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert run_dir.read_config(tmp_path).data.data_dir == old
    assert run_dir.load_config(tmp_path).data.data_dir == old
    assert run_dir.stored_config(tmp_path).data.data_dir == old


def test_the_committed_runs_still_name_their_data_from_the_repository_root(monkeypatch):
    from tf_sharpcf.analysis.runs import load_run
    runs = sorted((REPO / "results").glob("*/runs/*/config.json"))
    if not runs:
        pytest.skip("no committed runs")
    monkeypatch.chdir(REPO)
    for path in runs:
        raw = json.loads(path.read_text())["data"]["data_dir"]
        got = load_run(path.parent).config.data.data_dir
        if raw is not None and raw.startswith(run_dir.RUN_RELATIVE):     # written since the marker
            assert Path(got) == (REPO.parent / "shared" / "data").absolute(), path
        else:                                                           # the old form, as it was
            assert got == raw, path
    relative = [p for p in runs if json.loads(p.read_text())["data"]["data_dir"] == "../shared/data"]
    if relative and (REPO.parent / "shared" / "data").is_dir():
        run = relative[0].parent
        dataset = run_dir.load_config(run).data.dataset
        assert (Path(run_dir.load_config(run).data.data_dir) / dataset).is_dir()


# ---------------------------------------------------------------------------
# The readers: fit --resume, the analysis tools, export, the tuner's retrain


def test_fit_resume_from_another_working_directory_finds_the_data(tmp_path, monkeypatch, capsys):
    from tf_sharpcf.cli.fit import main as fit_main
    _named_dataset(tmp_path / "a" / "data")
    (tmp_path / "b").mkdir()
    monkeypatch.delenv("TF_SHARPCF_DATA", raising=False)
    monkeypatch.chdir(tmp_path / "a")
    assert fit_main(["--dataset", "gowalla", "--data-dir", "data", "--no-download", "--method", "bpr",
                     "--epochs", "1", "--warmup-epochs", "0", "--output-dir", "run", "--quiet", *FAST]) == 0
    assert json.loads((tmp_path / "a" / "run" / "config.json").read_text())["data"]["data_dir"] == \
        run_dir.RUN_RELATIVE + os.path.join("..", "data")
    monkeypatch.chdir(tmp_path / "b")                         # "data" here is no folder
    assert fit_main(["--resume", str(tmp_path / "a" / "run"), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((tmp_path / "a" / "run" / "metrics.json").read_text())["final"]["epoch"] == 2
    assert run_dir.read_config(tmp_path / "a" / "run").data.data_dir == str(tmp_path / "a" / "data")


def test_analysis_and_export_read_the_runs_data_dir_from_any_working_directory(tmp_path, monkeypatch):
    from tf_sharpcf.analysis.runs import load_run, load_run_data
    _named_dataset(tmp_path / "a" / "data")
    run = tmp_path / "a" / "runs" / "r"
    run.mkdir(parents=True)
    run_dir.write_config(run, _config(str(tmp_path / "a" / "data")))
    (run / "history.csv").write_text("epoch,loss\n1,0.5\n")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    loaded = load_run(run)
    assert loaded.config.data.data_dir == str(tmp_path / "a" / "data")
    assert load_run_data([loaded])["gowalla"].num_users == 8
    assert run_dir.load_config(run).data.data_dir == str(tmp_path / "a" / "data")     # export reads this


def test_the_final_retrain_is_reused_when_its_config_is_the_same(tmp_path, monkeypatch):
    """The retrain check compares the stored config.json (data_dir relative to
    the run) with the search's config (data_dir as typed)."""
    pytest.importorskip("keras_tuner")
    from tf_sharpcf.data.registry import load_dataset
    from tf_sharpcf.tuning.tuner import retrain
    _named_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = _config("data")
    data = load_dataset("gowalla", "data", allow_download=False)
    assert retrain(config, tmp_path / "project" / "final", data, verbose=0)["reused"] is False
    assert retrain(config, tmp_path / "project" / "final", data, verbose=0)["reused"] is True
    other = config.replace(data={"data_dir": str(tmp_path / "elsewhere")})
    assert retrain(other, tmp_path / "project" / "final", data, verbose=0)["reused"] is False
