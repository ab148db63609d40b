"""Early stopping (`--patience`): the rule as a pure function of the history
rows, a run that stops (its files, its phases), resuming one, the tuner's
trials, and the config field.

Data and settings are test_resume.py's: 180 interactions, batches of 32 in
chunks of 2, 2, 1 and 1 batches per epoch, evaluated every epoch so that a
patience of 1 stops a tiny run within a few epochs.
"""
import csv
import io
import json
import shutil

import numpy as np
import pytest

from test_resume import FAST, checkpoint_variables, history, tiny  # noqa: F401 (fixture)
from test_preemption import sigterm_at
from tf_sharpcf.cli import console, fit
from tf_sharpcf.cli.fit import main
from tf_sharpcf.cli.tune import main as tune_main
from tf_sharpcf.config import ADDED_FIELDS, Config, TrainConfig
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.training import checkpointing, train, warmup
from tf_sharpcf.training.early_stopping import phase_start, stop_epoch
from tf_sharpcf.training.progress import Progress
from tf_sharpcf.tuning import search_space
from tf_sharpcf.tuning.settings import SearchSettings, check_project, final_config

M = "recall@20"
BPR = ["--method", "bpr", "--epochs", "20", "--eval-every", "1", "--patience", "1", *FAST]


def rows(values, first=1, every=1):
    """History rows of evaluated epochs first, first + every, ... with `values` of M."""
    return [{"epoch": first + i * every, "loss": 0.5, M: v} for i, v in enumerate(values)]


# ---------------------------------------------------------------------------
# The rule


def test_a_gain_resets_the_count():
    # patience 2: 0.1 (best), 0.2 (gain), 0.15 (1), 0.25 (gain: 0), 0.2 (1), 0.2 (2) -> epoch 6
    r = rows([0.1, 0.2, 0.15, 0.25, 0.2, 0.2])
    assert stop_epoch(r, M, 2, 1, 0) == 6
    assert stop_epoch(r[:5], M, 2, 1, 0) is None
    assert stop_epoch(r, M, 1, 1, 0) == 3                   # 0.15 < 0.2: the first no-gain evaluation
    assert stop_epoch(r, M, 3, 1, 0) is None


def test_a_tie_is_no_gain():
    # patience 2: 0.3 (best), 0.3 (tie: 1), 0.3 (tie: 2) -> epoch 3
    assert stop_epoch(rows([0.3, 0.3, 0.3]), M, 2, 1, 0) == 3


def test_patience_0_never_stops():
    assert stop_epoch(rows([0.5, 0.1, 0.1, 0.1, 0.1]), M, 0, 1, 0) is None


def test_only_evaluated_epochs_on_the_eval_every_grid_count():
    # every 10 epochs, plus the unevaluated epochs in between and the extra
    # evaluation after a 25-epoch run's last epoch (epoch 25: not counted)
    r = [{"epoch": e, "loss": 0.5} for e in range(1, 41)]
    for e, v in ((10, 0.2), (20, 0.3), (25, 0.1), (30, 0.3), (40, 0.25)):
        r[e - 1][M] = v
    assert stop_epoch(r, M, 1, 10, 0) == 30
    assert stop_epoch(r, M, 2, 10, 0) == 40
    assert stop_epoch(r[:25], M, 1, 10, 0) is None


def test_only_the_phase_after_its_start_counts_and_its_own_best():
    # warm-up epochs 1-4 peak at 0.9 and would stop a patience-1 run at epoch 3;
    # from epoch 5 on: 0.1 (the phase's best), 0.2 (gain), 0.2 (tie: 1) -> epoch 7
    r = rows([0.5, 0.9, 0.8, 0.7, 0.1, 0.2, 0.2, 0.3])
    assert stop_epoch(r, M, 1, 1, 0) == 3
    assert stop_epoch(r, M, 1, 1, 4) == 7
    assert stop_epoch(r[:4], M, 1, 1, 4) is None            # a warm-up never stops
    assert stop_epoch(r, M, 1, 1, 8) is None                # no evaluation after the warm-up


def test_the_phase_is_the_methods_own_epochs():
    assert phase_start(TrainConfig(method="bpr", warmup_epochs=5)) == 0
    assert phase_start(TrainConfig(method="apr", warmup_epochs=5)) == 5
    assert phase_start(TrainConfig(method="sharpcf", warmup_epochs=5)) == 5


# ---------------------------------------------------------------------------
# A run that stops early


def config(folder, **train_fields):
    fields = {"method": "bpr", "epochs": 20, "batch_size": 32, "steps_per_execution": 2, "jit_compile": False,
              **train_fields}
    return Config().replace(data={"dataset": str(folder)}, model={"dim": 8}, eval={"eval_every": 1, "patience": 1},
                            train=fields)


def test_a_run_stops_early_and_its_files_hold_the_stopped_epoch(tiny, tmp_path):
    out = tmp_path / "run"
    metrics = train.train_and_evaluate(config(tiny, checkpoint_every=0), out, verbose=0)
    stopped = metrics["stopped_epoch"]
    rows_ = history(out)
    assert stopped is not None and 1 < stopped < 20 and metrics["patience"] == 1
    assert [int(r["epoch"]) for r in rows_] == list(range(1, stopped + 1))
    last_row = rows_[-1]
    assert metrics["final"]["epoch"] == stopped
    assert {k: float(last_row[k]) for k in metrics["final"] if k != "epoch"} == pytest.approx(
        {k: v for k, v in metrics["final"].items() if k != "epoch"}, rel=1e-5)
    assert json.loads((out / "metrics.json").read_text())["stopped_epoch"] == stopped
    # checkpoint_every 0 writes checkpoints/last/ "after the last epoch": the stopped one
    meta = checkpointing.read_meta(out / "checkpoints" / "last")
    assert meta["epoch"] == stopped and len(meta["history"]) == stopped
    assert stop_epoch(meta["history"], M, 1, 1, 0) == stopped

    # the same run told to train `stopped` epochs: the same history, model and embeddings
    ref = tmp_path / "ref"
    full = train.train_and_evaluate(config(tiny, epochs=stopped).replace(eval={"patience": 0}), ref, verbose=0)
    assert full["stopped_epoch"] is None and full["final"] == metrics["final"] and full["best"] == metrics["best"]
    assert rows_ == history(ref)
    got, want = checkpoint_variables(out / "checkpoints" / "last"), checkpoint_variables(ref / "checkpoints" / "last")
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for name in ("user_embeddings.npy", "item_embeddings.npy"):          # the best epoch's, as in any run
        np.testing.assert_array_equal(np.load(out / name), np.load(ref / name), err_msg=name)


def test_sharpcf_is_not_stopped_in_its_warm_up_nor_by_the_warm_ups_best(tiny, tmp_path):
    out = tmp_path / "run"
    metrics = train.train_and_evaluate(config(tiny, method="sharpcf", warmup_epochs=6, window=2), out, verbose=0)
    r = [{k: (float(v) if k != "epoch" else int(v)) for k, v in row.items() if v != ""} for row in history(out)]
    # counted from epoch 1, its (BPR) warm-up alone would have stopped it
    assert stop_epoch(r[:6], M, 1, 1, 0) is not None
    # its first own evaluation (epoch 7) sets the best however the warm-up did; a second is needed
    assert metrics["stopped_epoch"] >= 8
    assert metrics["stopped_epoch"] == stop_epoch(r, M, 1, 1, 6) == r[-1]["epoch"]


def test_a_run_whose_epochs_all_train_has_no_stopped_epoch(tiny, tmp_path):
    metrics = train.train_and_evaluate(config(tiny, epochs=2), tmp_path / "run", verbose=0)
    assert metrics["stopped_epoch"] is None and metrics["final"]["epoch"] == 2


# ---------------------------------------------------------------------------
# Resuming


def compare(out, ref):
    got, want = json.loads((out / "metrics.json").read_text()), json.loads((ref / "metrics.json").read_text())
    for key in ("best", "final", "stopped_epoch", "epochs"):
        assert got[key] == want[key], key
    drop = ("seconds", "eval_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in history(out)] == \
        [{k: v for k, v in r.items() if k not in drop} for r in history(ref)]
    a, b = checkpoint_variables(out / "checkpoints" / "last"), checkpoint_variables(ref / "checkpoints" / "last")
    assert sorted(a) == sorted(b)
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def bpr_ref(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["--dataset", str(tiny), *BPR, "--output-dir", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["stopped_epoch"] is not None
    return out


@pytest.mark.parametrize("before", [0, 1])
def test_a_run_stopped_by_sigterm_resumes_to_the_same_early_stop(tiny, bpr_ref, tmp_path, monkeypatch, before):
    """SIGTERM in the epoch that meets the rule (before 0) or the one before:
    the resumed run finishes that epoch in a `fit` call of its own and must
    not go on into the next one."""
    stopped = json.loads((bpr_ref / "metrics.json").read_text())["stopped_epoch"]
    out = tmp_path / "run"
    sigterm_at(monkeypatch, (stopped - before, 1))
    assert main(["--dataset", str(tiny), *BPR, "--output-dir", str(out)]) == 143
    monkeypatch.undo()
    meta = checkpointing.read_meta(out / "checkpoints" / "last")
    assert (meta["epoch"], meta["batches"]) == (stopped - before - 1, 2)
    assert main(["--resume", str(out), "--quiet"]) == 0
    compare(out, bpr_ref)


def test_a_resumed_run_that_had_stopped_trains_nothing_more(tiny, bpr_ref, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(bpr_ref, out)
    (out / "metrics.json").unlink()                   # as if killed after its last checkpoint
    before = checkpointing.read_meta(out / "checkpoints" / "last")

    def no_training(*args, **kwargs):
        raise AssertionError("a run that had met the rule trained again")
    monkeypatch.setattr(train, "fit_phase", no_training)
    assert main(["--resume", str(out), "--quiet"]) == 0
    compare(out, bpr_ref)
    # with more epochs too: an uninterrupted run of 30 epochs stops where this one did
    assert main(["--resume", str(out), "--epochs", "30", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_epoch"] == before["epoch"] and metrics["epochs"] == 30
    assert checkpointing.read_meta(out / "checkpoints" / "last")["epoch"] == before["epoch"]


def test_resume_refuses_another_patience(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(Config().replace(data={"dataset": "somewhere"}).to_json())
    with pytest.raises(ConfigError, match=r"--patience \(given 3, the run has 0\)"):
        fit.config_from_args(fit.build_parser().parse_args(["--resume", str(out), "--patience", "3"]))


# ---------------------------------------------------------------------------
# What fit prints


def test_fit_says_where_it_stopped(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--dataset", str(tiny), *[a for a in BPR if a != "--quiet"], "--output-dir", str(out)]) == 0
    stopped = json.loads((out / "metrics.json").read_text())["stopped_epoch"]
    assert f"stopped early at epoch {stopped} (no gain in 1 evaluation)\n" in capsys.readouterr().err


def test_the_summary_line_names_the_epoch_and_the_patience():
    assert console.early_stop_lines({"stopped_epoch": 60, "patience": 5}) == \
        ["stopped early at epoch 60 (no gain in 5 evaluations)"]
    assert console.early_stop_lines({"stopped_epoch": None, "patience": 5}) == []
    assert console.early_stop_lines({}) == []                   # a metrics.json written before --patience


class _StoppedModel:
    stop_training = True


def test_the_terminal_bar_ends_its_line_at_an_early_stop():
    class _History:
        columns, rows = ["epoch", "loss", M], [{"epoch": 3, "loss": 0.5, M: 0.2}]

        def inactive(self, epoch):
            return ()
    stream = io.StringIO()
    progress = Progress(_History(), epochs=20, stream=stream, terminal=True)
    progress.set_model(_StoppedModel())
    progress.on_epoch_begin(2)
    progress.on_epoch_end(2)
    assert "3/20 epochs" in stream.getvalue() and stream.getvalue().endswith("\n")


# ---------------------------------------------------------------------------
# The tuner


def test_a_trial_reports_the_epochs_it_trained_and_where_it_stopped(tiny, tmp_path):
    directory = tmp_path / "tuning"
    args = ["--dataset", str(tiny), "--method", "sharpcf", "--epochs", "14", "--warmup-epochs", "2",
            "--fix", "window=2", "--eval-every", "1", "--patience", "1", "--dim", "8", "--batch-size", "32",
            "--no-jit", "--quiet", "--search", "random", "--max-trials", "2", "--directory", str(directory),
            "--project-name", "p"]
    assert tune_main(args) == 0
    project = directory / "p"
    summaries = [json.loads((project / f"trial_{i}" / "trial_summary.json").read_text()) for i in range(2)]
    table = {r["trial"]: r for r in csv.DictReader(open(project / "trials.csv"))}
    for s in summaries:
        last = int(history(project / f"trial_{s['trial']}")[-1]["epoch"])
        assert s["trained_epochs"] == last - 2                         # after the shared warm start
        assert s["stopped_epoch"] == (last if last < 14 else None)
        assert table[s["trial"]]["stopped_epoch"] == ("" if s["stopped_epoch"] is None else str(last))
    assert any(s["stopped_epoch"] for s in summaries)
    assert "| stopped_epoch |" in (project / "trials.md").read_text()
    # the final retrain (on test) does not stop early: it trains the best trial's epochs
    summary = json.loads((project / "summary.json").read_text())
    best = next(s for s in summaries if s["trial"] == summary["best_trial"])
    chosen = Config.from_dict(json.loads((project / "best_hyperparameters.json").read_text()))
    assert chosen.eval.patience == 0 and chosen.train.epochs == (best["stopped_epoch"] or 14)
    assert summary["validation"]["stopped_epoch"] == best["stopped_epoch"]
    final = json.loads((project / "final" / "metrics.json").read_text())
    assert final["stopped_epoch"] is None and final["final"]["epoch"] == chosen.train.epochs


def test_a_trial_from_the_shared_warm_start_stops_where_fit_does(tiny, tmp_path):
    from tf_sharpcf.data.interactions import split_validation
    from tf_sharpcf.data.readers import load_lightgcn
    from tf_sharpcf.tuning import warm_starts
    data = split_validation(load_lightgcn(tiny), 0.1, seed=0)
    c = config(tiny, method="sharpcf", warmup_epochs=3, window=2)
    scratch = train.train_and_evaluate(c, tmp_path / "scratch", data, verbose=0)
    init, info = warm_starts.WarmStarts(tmp_path / "warmup", data, window=3).checkpoint(c, tmp_path / "init")
    shared = train.train_and_evaluate(c, tmp_path / "shared", data, verbose=0, start=train.Start.branch(init, 3))
    assert scratch["stopped_epoch"] is not None
    assert shared["stopped_epoch"] == scratch["stopped_epoch"]


def test_final_config_keeps_a_search_without_patience_as_it_was():
    c = Config()
    assert final_config(c, {"stopped_epoch": None}) == c
    stopping = c.replace(eval={"patience": 3})
    assert final_config(stopping, {"stopped_epoch": 120}) == c.replace(train={"epochs": 120})
    assert final_config(stopping, {"stopped_epoch": None}) == c


def test_an_older_search_json_without_patience_is_accepted_on_a_rerun(tmp_path):
    base = Config().replace(data={"dataset": "somewhere"}, train={"epochs": 4, "warmup_epochs": 2})
    settings = SearchSettings(base=base, space=search_space.search_space("sharpcf", {}))
    project = tmp_path / "p"
    project.mkdir()
    stored = settings.to_dict()
    del stored["base"]["eval"]["patience"]
    (project / "search.json").write_text(json.dumps(stored))
    check_project(settings, tmp_path, "p", overwrite=False)
    other = SearchSettings(base=base.replace(eval={"patience": 2}), space=settings.space)
    with pytest.raises(ConfigError, match="base.eval.patience: 0 -> 2"):
        check_project(other, tmp_path, "p", overwrite=False)


# ---------------------------------------------------------------------------
# The experiment runner's shared warm-up


def test_a_shared_warm_up_never_stops_early_and_bpr_does_not_branch_when_it_may_stop():
    base = Config().replace(train={"epochs": 10, "warmup_epochs": 4}, eval={"patience": 2})
    sharpcf, apr, bpr = (base.replace(train={"method": m}) for m in ("sharpcf", "apr", "bpr"))
    assert warmup.can_branch(sharpcf) and warmup.can_branch(apr) and not warmup.can_branch(bpr)
    assert warmup.can_branch(bpr.replace(eval={"patience": 0}))
    assert warmup.warmup_config([sharpcf, apr]).eval.patience == 0
    assert warmup.warmup_config([apr]).eval.patience == 0
    # runs that differ in patience alone share their warm-up
    assert warmup.sharing_key(sharpcf) == warmup.sharing_key(sharpcf.replace(eval={"patience": 0}))


# ---------------------------------------------------------------------------
# The config field


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_an_invalid_patience_is_a_clear_error(value):
    with pytest.raises(ConfigError, match=r"invalid --patience: must be an integer >= 0"):
        Config().replace(eval={"patience": value}).validate()


def test_fit_refuses_a_negative_patience_before_writing_anything(tiny, tmp_path, capsys):
    assert main(["--dataset", str(tiny), "--patience", "-1", "--output-dir", str(tmp_path / "run")]) == 2
    assert "invalid --patience: must be an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_config_json_written_before_patience_loads_with_early_stopping_off():
    stored = json.loads(Config().to_json())
    del stored["eval"]["patience"]
    assert ADDED_FIELDS["eval"] == {"patience": 0}
    assert Config.from_stored(stored).eval.patience == 0
    assert Config.from_stored(stored) == Config()
