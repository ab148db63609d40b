"""`python -m tf_sharpcf.tune`: the keras-tuner search, its files, resuming,
the shared warm start, and that no trial sees the test set."""
import csv
import json
import shutil

import numpy as np
import pytest

from tf_sharpcf.tuning import search_space, tuner, warm_starts
from tf_sharpcf.training import train
from tf_sharpcf.config import Config
from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.data.interactions import split_validation
from tf_sharpcf.cli.fit import main as fit_main
from tf_sharpcf.cli.tune import main, settings_from_args, build_parser

TINY = ["--method", "sharpcf", "--epochs", "4", "--warmup-epochs", "2", "--eval-every", "2",
        "--dim", "8", "--batch-size", "64", "--no-jit", "--quiet", "--initial-points", "2"]


class Recorder:
    """Wraps train.train_and_evaluate and the warm-up's input pipeline and
    keeps the data each one was given; can stop the process at the n-th run."""

    def __init__(self, monkeypatch, stop_at=None):
        self.runs, self.warmups, self.stop_at = [], [], stop_at
        real_train, real_warmup = train.train_and_evaluate, warm_starts.WarmStarts._train

        def run(config, workdir, data=None, **kw):
            self.runs.append((config, workdir, data, kw))
            if self.stop_at is not None and len(self.runs) == self.stop_at:
                # the process dies after the first epoch past the warm start
                real_train(config.replace(train={"epochs": config.train.warmup_epochs + 1}), workdir, data, **kw)
                raise KeyboardInterrupt("killed during a trial")
            return real_train(config, workdir, data, **kw)

        def warmup(warm_starts, config, folder):
            self.warmups.append(warm_starts.data)
            return real_warmup(warm_starts, config, folder)
        monkeypatch.setattr(train, "train_and_evaluate", run)
        monkeypatch.setattr(warm_starts.WarmStarts, "_train", warmup)

    def trial_runs(self):
        return [r for r in self.runs if r[1].parent.name != "final" and r[1].name != "final"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 3-trial search on tiny data, killed during its 2nd trial and re-run."""
    pytest.importorskip("sklearn")  # keras-tuner's Bayesian oracle, the default search
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("tune")
    folder = root / "tiny"
    folder.mkdir()
    train_rows, test_rows = [], []
    for u in range(30):
        items = rng.choice(40, size=8, replace=False)
        train_rows.append(f"{u} {' '.join(map(str, items[:6]))}\n")
        test_rows.append(f"{u} {' '.join(map(str, items[6:]))}\n")
    (folder / "train.txt").write_text("".join(train_rows))
    (folder / "test.txt").write_text("".join(test_rows))
    args = ["--dataset", str(folder), *TINY, "--max-trials", "3", "--directory", str(root / "tuning")]
    with pytest.MonkeyPatch.context() as mp:
        killed = Recorder(mp, stop_at=2)
        with pytest.raises(KeyboardInterrupt):
            main(args)
    with pytest.MonkeyPatch.context() as mp:
        rerun = Recorder(mp)
        assert main(args) == 0
    return {"root": root, "folder": folder, "args": args, "project": root / "tuning" / "tiny-sharpcf",
            "killed": killed, "rerun": rerun}


def test_search_writes_the_trials_table_best_config_and_final_run(searched):
    project = searched["project"]
    rows = list(csv.DictReader(open(project / "trials.csv")))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert set(rows[0]) >= {"lambda", "window", "lr", "l2", "val_recall@20", "val_ndcg@20", "epochs", "seconds"}
    for r in rows:
        assert 1e-3 <= float(r["lambda"]) <= 10 and 1 <= int(r["window"]) <= 7
        assert 0 <= float(r["val_recall@20"]) <= 1 and float(r["seconds"]) > 0
    assert "| trial | status | lambda | window |" in (project / "trials.md").read_text()
    assert (project / "trials.md").read_text().startswith("# sharpcf on ")     # no other part than the default
    for name in ("oracle.json", "tuner0.json", "trial_0/trial.json", "search.json", "summary.json"):
        assert (project / name).exists(), name
    best = Config.from_dict(json.loads((project / "best_hyperparameters.json").read_text()))
    summary = json.loads((project / "summary.json").read_text())
    assert best.train.lam == pytest.approx(summary["best_hyperparameters"]["lambda"])
    assert best.train.window == summary["best_hyperparameters"]["window"]
    best_row = next(r for r in rows if r["trial"] == summary["best_trial"])
    assert float(best_row["val_recall@20"]) == max(float(r["val_recall@20"]) for r in rows)
    final = json.loads((project / "final" / "metrics.json").read_text())
    assert summary["final"]["test"]["final"] == final["final"]
    assert final["num_train"] == 180                      # the full training data
    # one warm-up for all trials of the same (lr, L2); the others reused it
    assert summary["warmups_trained"] + summary["trials_reusing_a_warmup"] == 3
    assert summary["warmup_epochs_avoided"] == 2 * summary["trials_reusing_a_warmup"]


def test_rerun_continues_without_repeating_finished_trials(searched):
    # killed in trial 1: trial 0 finished; the re-run runs trials 1 and 2, then the final retrain
    killed, rerun = searched["killed"], searched["rerun"]
    assert [r[1].name for r in killed.runs] == ["trial_0", "trial_1"]
    assert [r[1].name for r in rerun.trial_runs()] == ["trial_1", "trial_2"]
    assert [r[1].name for r in rerun.runs][-1] == "final"
    # trial 1 continued from its own last checkpoint (epoch 3), trial 2 from the warm start
    (_, _, _, kw1), (_, _, _, kw2) = rerun.trial_runs()
    assert kw1["start"] == train.Start.resuming()
    assert not kw2["start"].resume and kw2["start"].checkpoint is not None and kw2["start"].epoch == 2
    history = list(csv.DictReader(open(searched["project"] / "trial_1" / "history.csv")))
    assert [r["epoch"] for r in history] == ["3", "4"]


def test_resume_extends_the_search_by_the_missing_trials_only(searched, monkeypatch):
    recorder = Recorder(monkeypatch)
    project = searched["project"]
    before = (project / "trial_0" / "metrics.json").read_text()
    assert main(["--resume", "--max-trials", "4", "--directory", str(searched["root"] / "tuning"),
                 "--project-name", "tiny-sharpcf", "--quiet", "--no-final"]) == 0
    assert [r[1].name for r in recorder.trial_runs()] == ["trial_3"]
    assert (project / "trial_0" / "metrics.json").read_text() == before
    assert len(list(csv.DictReader(open(project / "trials.csv")))) == 4


def test_a_project_whose_files_disagree_is_named_not_a_traceback(searched, tmp_path, capsys):
    """oracle.json naming a trial that has no folder (a trial_N/ removed by
    hand): keras-tuner's reload fails; `tune --resume` says which project
    and what to do, with the bad-input exit code."""
    shutil.copytree(searched["root"] / "tuning", tmp_path / "tuning")
    oracle = tmp_path / "tuning" / "tiny-sharpcf" / "oracle.json"
    state = json.loads(oracle.read_text())
    state["ongoing_trials"] = {"tuner0": "99"}
    oracle.write_text(json.dumps(state))
    assert main(["--resume", "--max-trials", "4", "--directory", str(tmp_path / "tuning"),
                 "--project-name", "tiny-sharpcf", "--quiet", "--no-final"]) == 2
    err = capsys.readouterr().err
    assert "tiny-sharpcf: keras-tuner cannot reload" in err and "KeyError" in err and "--overwrite" in err, err
    assert "Traceback" not in err


def test_no_trial_sees_the_test_set(searched):
    full = load_lightgcn(searched["folder"])
    test_pairs = set(zip(full.test_users.tolist(), full.test_items.tolist()))
    train_pairs = set(zip(full.train_users.tolist(), full.train_items.tolist()))
    seen = [r[2] for r in searched["killed"].trial_runs() + searched["rerun"].trial_runs()]
    seen += searched["killed"].warmups + searched["rerun"].warmups
    assert len(seen) >= 4
    for data in seen:
        parts = (set(zip(data.train_users.tolist(), data.train_items.tolist())),
                 set(zip(data.test_users.tolist(), data.test_items.tolist())))
        assert not (parts[0] | parts[1]) & test_pairs
        assert parts[1] <= train_pairs and parts[1] and not parts[0] & parts[1]
    # only the final retrain gets the full data
    final = [r for r in searched["rerun"].runs if r[1].name == "final"]
    assert len(final) == 1 and final[0][2].num_test == full.num_test


def test_fit_accepts_best_hyperparameters_and_flags_override_it(searched, tmp_path):
    best = searched["project"] / "best_hyperparameters.json"
    out = tmp_path / "fit"
    assert fit_main(["--config", str(best), "--epochs", "3", "--output-dir", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    chosen = json.loads(best.read_text())
    assert config["train"]["epochs"] == 3
    assert config["train"]["lam"] == chosen["train"]["lam"] and config["train"]["window"] == chosen["train"]["window"]


def test_rerun_with_other_settings_is_refused(searched, capsys):
    args = searched["args"] + ["--lambda-range", "0.01", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--resume" in err and "--overwrite" in err and "lambda" in err


@pytest.mark.parametrize("method", ["sharpcf", "apr"])
def test_a_trial_from_the_shared_warm_start_trains_exactly_like_fit(tiny_folder, tmp_path, method):
    data = split_validation(load_lightgcn(tiny_folder), 0.1, seed=0)
    config = Config().replace(
        data={"dataset": str(tiny_folder)}, model={"dim": 8}, eval={"eval_every": 1},
        train={"method": method, "epochs": 5, "warmup_epochs": 3, "window": 2, "lam": 1.0, "eps": 0.3,
               "batch_size": 64, "jit_compile": False})
    scratch = tmp_path / "scratch"
    train.train_and_evaluate(config, scratch, data, verbose=0)
    warm = warm_starts.WarmStarts(tmp_path / "warmup", data, window=3)
    init, info = warm.checkpoint(config, tmp_path / "init")
    assert not info["reused"] and info["epochs"] == 3
    shared = tmp_path / "shared"
    train.train_and_evaluate(config, shared, data, verbose=0, start=train.Start.branch(init, 3))

    a = list(csv.DictReader(open(scratch / "history.csv")))[3:]
    b = list(csv.DictReader(open(shared / "history.csv")))
    assert [r["epoch"] for r in b] == ["4", "5"]
    for column in ("loss", "trajectory_loss" if method == "sharpcf" else "adversarial_loss", "recall@20"):
        np.testing.assert_allclose([float(r[column]) for r in b], [float(r[column]) for r in a], rtol=1e-6)
    if method == "sharpcf":
        assert float(b[0]["trajectory_loss"]) > 0    # the copied table was read from epoch 4 on
    np.testing.assert_allclose(np.load(shared / "item_embeddings.npy"), np.load(scratch / "item_embeddings.npy"),
                               rtol=1e-6, atol=1e-7)
    # another λ, E: the same warm-up
    _, again = warm.checkpoint(config.replace(train={"lam": 0.1, "window": 1}), tmp_path / "init2")
    assert again["reused"] and again["key"] == info["key"]
    assert len(list((tmp_path / "warmup").iterdir())) == 1


def test_warm_up_key_follows_lr_and_l2_but_not_lambda_or_window(tiny_folder, tmp_path):
    data = load_lightgcn(tiny_folder)
    warm = warm_starts.WarmStarts(tmp_path, data)
    base = Config().replace(train={"epochs": 4, "warmup_epochs": 2})
    assert warm.key(base) == warm.key(base.replace(train={"lam": 3.0, "window": 5}))
    assert warm.key(base) != warm.key(base.replace(train={"lr": 0.01}))
    assert warm.key(base) != warm.key(base.replace(train={"l2": 0.03}))
    other = warm_starts.WarmStarts(tmp_path, split_validation(data, 0.1, seed=1))
    assert warm.key(base) != other.key(base)


def test_flags_build_the_search_space():
    args = build_parser().parse_args(["--lambda-range", "0.01", "1", "--window-values", "1", "3", "5",
                                      "--fix", "lr=0.005", "--epochs", "30", "--warmup-epochs", "10"])
    settings = settings_from_args(args)
    assert settings.space["lambda"] == search_space.Space.range(0.01, 1.0)
    assert settings.space["window"] == search_space.Space.choice(1, 3, 5)
    assert settings.space["lr"] == search_space.Space.fixed(0.005)
    assert settings.space["l2"] == search_space.PARAMETERS["l2"].default
    assert "eps" not in settings.space and settings.recorded_window == 7
    hp = tuner.make_oracle(settings).get_space()
    assert sorted(p.name for p in hp.space) == ["l2", "lambda", "window"]
    config = settings.trial_config({"lambda": 0.5, "window": 3, "l2": 0.03})
    assert (config.train.lam, config.train.window, config.train.lr, config.train.l2) == (0.5, 3, 0.005, 0.03)
    apr = settings_from_args(build_parser().parse_args(["--method", "apr", "--eps-values", "0.1", "0.5",
                                                        "--epochs", "30", "--warmup-epochs", "10"]))
    assert set(apr.tuned) == {"eps", "adv_weight", "lr", "l2"}


def test_negatives_and_batch_size_are_searched_only_when_given():
    plain = settings_from_args(build_parser().parse_args(["--method", "bpr", "--epochs", "3",
                                                          "--warmup-epochs", "0", "--negatives", "4"]))
    assert "negatives" not in plain.space and "batch_size" not in plain.space
    assert plain.trial_config({"lr": 0.005, "l2": 0.01}).train.negatives == 4
    args = build_parser().parse_args(["--method", "bpr", "--epochs", "3", "--warmup-epochs", "0",
                                      "--negatives-values", "1", "4", "16", "--batch-size-values", "1024", "8192",
                                      "--fix", "lr=0.001", "--fix", "l2=0.001"])
    settings = settings_from_args(args)
    assert settings.space["negatives"] == search_space.Space.choice(1, 4, 16)
    config = settings.trial_config({"negatives": 16, "batch_size": 1024})
    assert (config.train.negatives, config.train.batch_size, config.train.lr) == (16, 1024, 0.001)
    assert sorted(p.name for p in tuner.make_oracle(settings).get_space().space) == ["batch_size", "negatives"]


def test_warm_up_key_follows_k(tiny_folder, tmp_path):
    warm = warm_starts.WarmStarts(tmp_path, load_lightgcn(tiny_folder))
    base = Config().replace(train={"epochs": 4, "warmup_epochs": 2})
    assert warm.key(base) != warm.key(base.replace(train={"negatives": base.train.negatives + 1}))


BAD = [
    (["--negatives-values", "0", "2"], "--negatives-values"),
    (["--lambda-range", "0", "1"], "--lambda-range"),
    (["--lambda-range", "1", "0.1"], "LO < HI"),
    (["--window-values", "0", "2"], "--window-values"),
    (["--eps-range", "0.1", "1"], "apr only"),
    (["--fix", "nope=1"], "unknown hyper-parameter 'nope'"),
    (["--fix", "window=abc"], "integer"),
    (["--fix", "lr=0.01", "--lr-values", "0.01", "0.02"], "--fix"),
    (["--epochs", "2", "--warmup-epochs", "2"], "--epochs"),
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--resume"], "no search"),
]


@pytest.mark.parametrize("flags,message", BAD)
def test_bad_search_settings_give_a_clear_error_and_write_nothing(tiny_folder, tmp_path, capsys, flags, message):
    args = ["--dataset", str(tiny_folder), "--directory", str(tmp_path / "tuning"), "--quiet"]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "tuning").exists()
