import json

import pytest

from tf_sharpcf.errors import ConfigError
from tf_sharpcf.analysis.experiments import load_experiment, plan, summarize, table_markdown
from tf_sharpcf.cli.pipeline import main

TOML = """
name = "tiny"
dataset = "{folder}"
methods = ["bpr", "sharpcf"]
seeds = [0, 1]
[common.model]
dim = 8
[common.train]
epochs = 2
warmup_epochs = 1
batch_size = 64
jit_compile = false
[common.eval]
eval_every = 1
[overrides.sharpcf.train]
window = 1
lam = 0.5
[provenance]
lam = "test"
"""


def test_plan_merges_common_and_method_overrides(tmp_path, tiny_folder):
    path = tmp_path / "e.toml"
    path.write_text(TOML.format(folder=tiny_folder))
    runs = plan(load_experiment(path))
    assert [r.label for r in runs] == ["bpr-seed0", "bpr-seed1", "sharpcf-seed0", "sharpcf-seed1"]
    sharp = runs[2].config
    assert sharp.train.lam == 0.5 and sharp.train.window == 1 and sharp.model.dim == 8
    assert runs[0].config.train.lam == 0.1  # the default: overrides apply to their method only


def test_bad_definitions_are_rejected(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('methods = ["bpr", "svd"]\n')
    with pytest.raises(ConfigError, match="unknown method 'svd'"):
        load_experiment(path)
    path.write_text('methods = ["bpr"]\n[overrides.apr.train]\neps = 1.0\n')
    with pytest.raises(ConfigError, match="not in methods"):
        load_experiment(path)
    path.write_text('methods = ["bpr"]\n[common.train]\nwindow = 0\n')
    with pytest.raises(ConfigError, match="--window"):
        plan(load_experiment(path))
    path.write_text('methods = ["bpr"]\n[common.train]\nstrategy = "parameter-server"\n')
    with pytest.raises(ConfigError, match="not run by the runner"):
        plan(load_experiment(path))


def test_summary_means_and_relative_improvement(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('methods = ["bpr", "sharpcf"]\nseeds = [0, 1]\n')
    exp = load_experiment(path)
    block = lambda r: {"epoch": 1, "recall@10": r, "ndcg@10": r, "recall@20": r, "ndcg@20": r}
    results = {"bpr-seed0": {"final": block(0.1), "seconds_per_epoch": 1.0},
               "bpr-seed1": {"final": block(0.3), "seconds_per_epoch": 3.0},
               "sharpcf-seed0": {"final": block(0.25), "seconds_per_epoch": 2.0},
               "sharpcf-seed1": {"final": block(0.25), "seconds_per_epoch": 2.0}}
    s = summarize(exp, results)
    assert s["rows"]["bpr"]["recall@20"] == pytest.approx((0.2, 0.1414213562))
    assert s["ri"]["bpr"]["recall@20"] == pytest.approx(0.25)   # 0.25 / 0.2 - 1



def test_relative_improvements_of_a_chosen_method_over_chosen_baselines(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('methods = ["bpr", "apr", "sharpcf"]\nri_of = "apr"\nri_over = ["bpr"]\n')
    exp = load_experiment(path)
    block = lambda r: {"epoch": 1, "recall@10": r, "ndcg@10": r, "recall@20": r, "ndcg@20": r}
    results = {f"{m}-seed0": {"final": block(v), "seconds_per_epoch": 1.0}
               for m, v in (("bpr", 0.2), ("apr", 0.3), ("sharpcf", 0.25))}
    s = summarize(exp, results)
    assert list(s["ri"]) == ["bpr"] and s["ri"]["bpr"]["ndcg@20"] == pytest.approx(0.5)
    header = table_markdown(exp, s, results).splitlines()[2]
    assert header == "| Metric | BPR | APR | SharpCF | RI w.r.t. BPR |"
    # the default: the last listed method over the others
    path.write_text('methods = ["bpr", "apr", "sharpcf"]\n')
    s = summarize(load_experiment(path), results)
    assert list(s["ri"]) == ["bpr", "apr"] and s["ri"]["apr"]["recall@10"] == pytest.approx(0.25 / 0.3 - 1)
    path.write_text('methods = ["bpr", "sharpcf"]\nri_of = "apr"\n')
    with pytest.raises(ConfigError, match="ri_of 'apr' is not in methods"):
        load_experiment(path)


def test_columns_name_the_loss_when_it_is_not_bpr(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('methods = ["bpr", "apr", "sharpcf"]\n[common.train]\nloss = "softmax"\n'
                    '[overrides.apr.train]\nloss = "hardest"\n')
    exp = load_experiment(path)
    block = lambda r: {"epoch": 1, "recall@10": r, "ndcg@10": r, "recall@20": r, "ndcg@20": r}
    results = {f"{m}-seed0": {"final": block(0.2), "seconds_per_epoch": 1.0} for m in ("bpr", "apr", "sharpcf")}
    header = table_markdown(exp, summarize(exp, results), results).splitlines()[2]
    assert header == ("| Metric | softmax | hardest + APR | softmax + SharpCF | RI w.r.t. softmax "
                      "| RI w.r.t. hardest + APR |")

def test_pipeline_runs_every_method_and_seed_then_resumes(tmp_path, tiny_folder, monkeypatch):
    path = tmp_path / "e.toml"
    path.write_text(TOML.format(folder=tiny_folder))
    results = tmp_path / "results"
    assert main([str(path), "--results-dir", str(results), "--quiet"]) == 0
    root = results / "tiny"
    assert sorted(p.name for p in (root / "runs").iterdir()) == [
        "bpr-seed0", "bpr-seed1", "sharpcf-seed0", "sharpcf-seed1", "warmup-seed0", "warmup-seed1"]
    table = (root / "table.md").read_text()
    assert "RI w.r.t. BPR" in table and "sharpcf-seed1" in table and "`lam`: test" in table
    assert (root / "table.csv").read_text().startswith("method,")
    # the cost: every run's own epoch (1 after its warm-up) and each seed's warm-up once
    import csv
    rows = lambda run: list(csv.DictReader(open(root / "runs" / run / "history.csv")))
    own = [r for run in ("bpr-seed0", "bpr-seed1", "sharpcf-seed0", "sharpcf-seed1") for r in rows(run)[1:]]
    own += [r for run in ("warmup-seed0", "warmup-seed1") for r in rows(run)]
    assert len(own) == 6
    hours = sum(float(r["seconds"]) + float(r["eval_seconds"] or 0) for r in own) / 3600
    assert f"Cost: {hours:.2f} h wall-clock" in table and "4 run(s) and 2 shared warm-up(s)" in table
    # only the run without metrics.json is trained again
    from tf_sharpcf.training import train
    saved = json.loads((root / "runs" / "bpr-seed1" / "metrics.json").read_text())
    (root / "runs" / "bpr-seed1" / "metrics.json").unlink()
    calls = []

    def fake(config, workdir, data=None, verbose=1, start=None):
        calls.append(workdir.name)
        return saved
    monkeypatch.setattr(train, "train_and_evaluate", fake)
    assert main([str(path), "--results-dir", str(results), "--quiet"]) == 0
    assert calls == ["bpr-seed1"]


def test_pipeline_continues_an_interrupted_run(tmp_path, tiny_folder, monkeypatch):
    path = tmp_path / "e.toml"
    path.write_text(TOML.format(folder=tiny_folder).replace('seeds = [0, 1]', 'seeds = [0]')
                    .replace('methods = ["bpr", "sharpcf"]', 'methods = ["bpr"]')
                    .replace("[overrides.sharpcf.train]\nwindow = 1\nlam = 0.5\n", ""))
    results = tmp_path / "results"
    assert main([str(path), "--results-dir", str(results), "--quiet"]) == 0
    run = results / "tiny" / "runs" / "bpr-seed0"
    (run / "metrics.json").unlink()   # as if killed after its last checkpoint
    from tf_sharpcf.training import train
    real, seen = train.train_and_evaluate, []

    def spy(*a, **k):
        seen.append(k["start"].resume)
        return real(*a, **k)
    monkeypatch.setattr(train, "train_and_evaluate", spy)
    assert main([str(path), "--results-dir", str(results), "--quiet"]) == 0
    assert seen == [True] and (run / "metrics.json").exists()


def test_history_seconds_count_each_epoch_after_the_warmup_once():
    from tf_sharpcf.analysis.experiments import history_seconds
    rows = [{"epoch": "1", "seconds": "9", "eval_seconds": ""}, {"epoch": "2", "seconds": "1", "eval_seconds": "4"},
            {"epoch": "3", "seconds": "2", "eval_seconds": ""}, {"epoch": "3", "seconds": "3", "eval_seconds": "5"}]
    assert history_seconds(rows) == (13.0, 9.0)        # epoch 3 redone after a resume: its last row
    assert history_seconds(rows, after_epoch=1) == (4.0, 9.0)
    assert history_seconds([]) == (0.0, 0.0)


def test_epoch_seconds_are_the_methods_own_epochs_after_warmup():
    from tf_sharpcf.training.train import epoch_seconds
    rows = [{"epoch": e, "seconds": s} for e, s in enumerate([9.0, 1.0, 1.0, 3.0, 3.0, 4.0], start=1)]
    assert epoch_seconds(rows, 3) == {"seconds_per_epoch": 3.0, "seconds_per_warmup_epoch": 1.0}
    assert epoch_seconds(rows, 0) == {"seconds_per_epoch": 3.0}
    assert epoch_seconds(rows[:2], 3) == {"seconds_per_epoch": 5.0}     # not past the warm-up yet


BRANCH_TOML = """
name = "branch"
dataset = "{folder}"
methods = ["bpr", "apr", "sharpcf"]
seeds = [0]
[common.model]
dim = 8
[common.train]
epochs = 6
warmup_epochs = 3
batch_size = 64
negatives = 2
[common.eval]
eval_every = 1
[overrides.apr.train]
eps = 0.3
[overrides.sharpcf.train]
window = 2
lam = 1.0
"""


@pytest.mark.slow
def test_runs_branched_from_the_shared_warm_up_equal_runs_from_scratch(tmp_path, tiny_folder):
    """BPR, APR and SharpCF branched at E_start from one warm-up run (SharpCF
    with λ = 0, its table re-slotted to E) train exactly like runs of their
    own from epoch 0 (XLA on, as `fit` runs)."""
    import csv

    import numpy as np

    from tf_sharpcf.training import train
    path = tmp_path / "b.toml"
    path.write_text(BRANCH_TOML.format(folder=tiny_folder))
    results = tmp_path / "results"
    assert main([str(path), "--results-dir", str(results), "--quiet"]) == 0
    runs = results / "branch" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["apr-seed0", "bpr-seed0", "sharpcf-seed0", "warmup-seed0"]
    assert json.loads((runs / "warmup-seed0" / "config.json").read_text())["train"]["epochs"] == 3
    for run in plan(load_experiment(path)):
        scratch = tmp_path / "scratch" / run.label
        train.train_and_evaluate(run.config, scratch, verbose=0)
        branched = runs / run.label
        # Equal up to float rounding: the warm-up's λ = 0 recording changes how
        # XLA fuses the BPR step (ulp-level differences, ~1e-8 here); SharpCF's
        # own warm-up epochs are that same graph, so its branch is exact.
        same = np.testing.assert_array_equal if run.method == "sharpcf" else \
            (lambda a, b, err_msg: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=err_msg))
        for name in ("user_embeddings.npy", "item_embeddings.npy"):
            same(np.load(branched / name), np.load(scratch / name), err_msg=run.label)
        a = list(csv.DictReader(open(scratch / "history.csv")))
        b = list(csv.DictReader(open(branched / "history.csv")))
        assert [r["epoch"] for r in b] == [str(e) for e in range(1, 7)]
        columns = ["loss", "bpr_loss", "recall@20", "ndcg@20"] + {
            "apr": ["adversarial_loss"], "sharpcf": ["trajectory_loss"]}.get(run.method, [])
        for c in columns:
            assert [r[c] == "" for r in b] == [r[c] == "" for r in a], f"{run.label} {c}"
            np.testing.assert_allclose([float(r[c] or 0) for r in b], [float(r[c] or 0) for r in a], rtol=1e-5,
                                       err_msg=f"{run.label} {c}")
        if run.method == "sharpcf":
            assert float(b[3]["trajectory_loss"]) > 0      # the re-slotted table was read at epoch 4
        else:
            assert all(r["trajectory_loss"] == "" for r in b)
        mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (branched, scratch))
        assert mine["final"]["epoch"] == theirs["final"]["epoch"] == 6
        assert mine["final"]["recall@20"] == pytest.approx(theirs["final"]["recall@20"], rel=1e-5)


def test_a_finished_warm_up_survives_a_change_of_defaults_its_method_does_not_use(tmp_path):
    """The runner compares what a run uses: a finished SharpCF-λ0 warm-up whose
    stored config has other (APR-only) defaults is still the same run."""
    from tf_sharpcf.config import Config
    from tf_sharpcf.training.runner import same_run
    run = tmp_path / "warmup-seed0"
    run.mkdir()
    config = Config().replace(train={"method": "sharpcf", "lam": 0.0, "epochs": 3, "warmup_epochs": 3})
    stored = config.replace(train={"eps": 0.37, "adv_weight": 9.0, "checkpoint_every": 5},
                            data={"data_dir": "/elsewhere"})
    (run / "config.json").write_text(stored.to_json())
    assert same_run(run, config)
    assert not same_run(run, config.replace(train={"lr": 0.01}))
    assert not same_run(run, config.replace(train={"window": 2}))
