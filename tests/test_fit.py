"""`python -m tf_sharpcf.fit` end to end, and its answers to bad input."""
import csv
import json

import numpy as np
import pytest

from conftest import shared_dataset, write_lightgcn
from tf_sharpcf.cli.fit import main
from tf_sharpcf.training import run_dir

FAST = ["--dim", "8", "--batch-size", "64", "--no-jit", "--quiet"]


def test_fit_writes_every_output_file(tiny_folder, tmp_path):
    out = tmp_path / "run"
    code = main(["--dataset", str(tiny_folder), "--method", "sharpcf", "--epochs", "3",
                 "--warmup-epochs", "1", "--window", "1", "--eval-every", "2", "--output-dir", str(out), *FAST])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["method"] == "sharpcf" and config["train"]["window"] == 1
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["recall@20"] == "" and rows[1]["recall@20"] != "" and rows[2]["recall@20"] != ""
    assert float(rows[2]["trajectory_loss"]) >= 0 and float(rows[2]["seconds"]) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    for block in ("best", "final"):
        assert set(metrics[block]) >= {"epoch", "recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    assert metrics["final"]["epoch"] == 3 and metrics["method"] == "sharpcf"
    assert metrics["seconds_per_epoch"] > 0 and metrics["eval_seconds"] > 0
    assert any((out / "tensorboard").iterdir())
    assert (out / "checkpoints" / "best" / "ckpt.index").exists()
    best = json.loads((out / "checkpoints" / "best" / "meta.json").read_text())
    assert best["epoch"] == metrics["best"]["epoch"]
    assert np.load(out / "user_embeddings.npy").shape == (30, 8)
    assert np.load(out / "item_embeddings.npy").shape == (40, 8)


def test_fit_refuses_to_overwrite_a_finished_run(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", str(tiny_folder), "--method", "bpr", "--epochs", "1", "--output-dir", str(out), *FAST]
    assert main(args) == 0
    before = (out / "metrics.json").read_text()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before
    assert main(args + ["--overwrite"]) == 0


def test_fit_reads_a_config_file_and_flags_override_it(tiny_folder, tmp_path):
    cfg = tmp_path / "best.json"
    cfg.write_text(json.dumps({"train": {"method": "apr", "eps": 0.25, "epochs": 1}}))
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--dataset", str(tiny_folder), "--eps", "0.3",
                 "--warmup-epochs", "0", "--output-dir", str(out), *FAST]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["method"] == "apr" and config["train"]["eps"] == 0.3


@pytest.mark.slow
def test_fit_on_shared_ml1m_for_one_epoch(tmp_path):
    folder = shared_dataset("ml-1m")
    out = tmp_path / "ml1m"
    assert main(["--dataset", "ml-1m", "--data-dir", str(folder.parent), "--method", "bpr", "--epochs", "2",
                 "--lr", "0.005", "--output-dir", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] == 800_193
    # two epochs of BPR are far above random ranking (recall@20 about 0.006 here)
    assert metrics["final"]["recall@20"] > 0.05


BAD_FILES = [
    ("0 1 2\n1 x 3\n", "0 4\n1 5\n", "train.txt:2:"),            # non-integer id
    ("0 1 2\n1 -3 3\n", "0 4\n1 5\n", "train.txt:2:"),           # negative id
    ("", "0 4\n", "train.txt: empty"),                            # empty file
    ("0 1 2\n1 2 3\n", "7 1\n8 2\n", "no test interaction left to evaluate: 2 test user(s)"),  # all cold
    ("0 1 2\n1 2 3\n", "0\n1\n", "test.txt: no test interactions"),  # test lines hold only user ids
    ("0 1 2\n1 2 2147483646\n", "0 1\n", "train.txt:2: item id 2147483646 would make a 2,147,483,647-row"),
    ("0 1 2\n1 2\n", "0 1\n99999999 2\n", "test.txt:2: user id 99999999 would make"),
    ("0 1 2\n1 2 \xff3\n", "0 4\n", "train.txt:2:"),             # malformed line (stray character)
]


@pytest.mark.parametrize("train,test,message", BAD_FILES)
def test_bad_files_give_a_clear_error_and_write_nothing(tmp_path, capsys, train, test, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    out = tmp_path / "run"
    assert main(["--dataset", str(folder), "--epochs", "1", "--output-dir", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


BAD_FLAGS = [
    (["--window", "0"], "--window"), (["--lambda", "-1"], "--lambda"), (["--eps", "-0.1"], "--eps"),
    (["--batch-size", "0"], "--batch-size"), (["--dim", "0"], "--dim"), (["--lr", "nan"], "--lr"),
    (["--dataset", "no-such-dataset"], "unknown dataset 'no-such-dataset'"),
    (["--k", "0"], "--k"), (["--eval-every", "0"], "--eval-every"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS)
def test_invalid_settings_give_a_clear_error_and_write_nothing(tiny_folder, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    args = ["--dataset", str(tiny_folder), "--epochs", "1", "--output-dir", str(out), *FAST]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


def test_missing_named_dataset_says_which_files_to_put_where(tmp_path, capsys, monkeypatch):
    from tf_sharpcf.data import registry

    def offline(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(registry.urllib.request, "urlopen", offline)
    assert main(["--dataset", "gowalla", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                 "--output-dir", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "train.txt" in err and str(tmp_path / "data" / "gowalla") in err
    assert not (tmp_path / "data" / "gowalla" / "train.txt").exists()


def test_download_checks_the_checksum_and_keeps_nothing_on_mismatch(tmp_path, monkeypatch):
    import io
    from tf_sharpcf.data import registry
    from tf_sharpcf.errors import DataError
    monkeypatch.setattr(registry.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"0 1 2\n"))
    remote = registry.RemoteFile("train.txt", "https://example.invalid/train.txt", ("sha256", "0" * 64))
    with pytest.raises(DataError, match="sha256 mismatch"):
        registry.download(remote, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cold_test_users_and_items_are_left_out_with_a_warning_and_counted(tmp_path, capsys):
    """Test users and items with no training interaction cannot be ranked from
    training data: a warning counts them, Recall/NDCG leave them out, and
    metrics.json says how many users were evaluated."""
    train = {u: [(u + k) % 6 for k in range(3)] for u in range(6)}
    train[6] = []                                         # user 6: a line, no training item
    test = {u: [(u + 3) % 6] for u in range(6)}
    test[2] = test[2] + [9]                              # item 9: in no training line
    test[6], test[7] = [1], [2]                          # users 6 and 7: no training interaction
    folder = write_lightgcn(tmp_path / "cold", train, test)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"test.txt: 2 test user\(s\) with no training interaction \(ids 6, 7\); "
                                         r"1 test item\(s\) .*\(ids 9\): their 3 test interaction\(s\) are left out"):
        assert main(["--dataset", str(folder), "--epochs", "1", "--output-dir", str(out), "--quiet", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["test_users_evaluated"], metrics["cold_test_users"], metrics["cold_test_items"]) == (6, 2, 1)
    from tf_sharpcf.data.readers import load_lightgcn
    with pytest.warns(UserWarning):
        data = load_lightgcn(folder)
    assert sorted(zip(data.test_users.tolist(), data.test_items.tolist())) == [(u, (u + 3) % 6) for u in range(6)]


BAD_CONFIG_FILES = [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a UTF-8 JSON file"),
    (b'{"train": "ab"}', "config section 'train' must be an object of fields, got a string"),
    (b'{"data": {"data_dir": 5}}', "config field 'data.data_dir' must be a string or null, got int 5"),
    (b'{"train": {"epochs": "10"}}', "config field 'train.epochs' must be an integer, got a string"),
    (b'{"train": {"lr": true}}', "config field 'train.lr' must be a number, got a boolean"),
    (b'{"eval": {"ks": [10, "20"]}}', "config field 'eval.ks' must be a list of integers"),
    (b'{"model": {"dim": 8.5}}', "config field 'model.dim' must be an integer, got float 8.5"),
    (b'[1, 2]', "a config must be a JSON object of sections, got a list"),
    (b'{"train": {"seed": 4294967296}}', "--seed: must be an integer in [0, 2**32 - 1]"),
    (b'{"nope": {}}', "unknown config section(s): nope"),
    (b'{"train": {"epochs": 3,}}', ":1: "),
]


@pytest.mark.parametrize("raw,message", BAD_CONFIG_FILES)
def test_bad_config_files_are_a_clear_error_naming_file_and_field(tiny_folder, tmp_path, capsys, raw, message):
    path = tmp_path / "config.json"
    path.write_bytes(raw)
    out = tmp_path / "run"
    assert main(["--config", str(path), "--dataset", str(tiny_folder), "--output-dir", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid --") and message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("raw,message", BAD_CONFIG_FILES[:3])
def test_resume_of_a_folder_with_a_bad_config_is_a_clear_error(tmp_path, capsys, raw, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(raw)
    assert main(["--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid --resume: ") and str(run / "config.json") in err and message in err


def test_config_that_is_a_directory_is_a_clear_error(tiny_folder, tmp_path, capsys):
    (tmp_path / "cfg").mkdir()
    assert main(["--config", str(tmp_path / "cfg"), "--dataset", str(tiny_folder),
                 "--output-dir", str(tmp_path / "run"), *FAST]) == 2
    assert "is a directory, not a config file" in capsys.readouterr().err
    run = tmp_path / "r"
    (run / "config.json").mkdir(parents=True)
    assert main(["--resume", str(run), "--quiet"]) == 2
    assert "invalid --resume:" in capsys.readouterr().err


def test_seed_beyond_numpy_range_is_refused_before_anything_is_written(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--dataset", str(tiny_folder), "--seed", "4294967296", "--output-dir", str(out), *FAST]) == 2
    assert "invalid --seed" in capsys.readouterr().err and not out.exists()


def test_a_config_moved_to_another_machine_reads_this_machines_data_dir(tmp_path, monkeypatch):
    """config.json records the --data-dir its run was given; `fit --config`
    elsewhere resolves the data directory as fit does (flag, else
    $TF_SHARPCF_DATA, else the cache), not from the file."""
    data_dir = tmp_path / "data-here"
    rows = {u: [(u + k) % 9 for k in range(4)] for u in range(8)}
    write_lightgcn(data_dir / "gowalla", rows, {u: [(u + 5) % 9] for u in range(8)})   # a stand-in
    first = tmp_path / "first"
    assert main(["--dataset", "gowalla", "--data-dir", str(data_dir), "--no-download", "--epochs", "1",
                 "--warmup-epochs", "0",
                 "--output-dir", str(first), *FAST]) == 0
    stored = json.loads((first / "config.json").read_text())
    assert run_dir.read_config(first).data.data_dir == str(data_dir)  # what the user gave
    moved = tmp_path / "elsewhere" / "config.json"
    moved.parent.mkdir()
    stored["data"]["data_dir"] = "/no/such/machine/data"              # as written on another machine
    moved.write_text(json.dumps(stored))
    monkeypatch.setenv("TF_SHARPCF_DATA", str(data_dir))
    second = tmp_path / "second"
    assert main(["--config", str(moved), "--no-download", "--output-dir", str(second), *FAST]) == 0
    assert json.loads((second / "config.json").read_text())["data"]["data_dir"] is None
