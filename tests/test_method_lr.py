"""--method-lr: the learning rate from E_start on (every method, BPR too).

A run with --lr a --method-lr b must train its warm-up at a and every later
epoch at b: the same weights as a run of E_start epochs at a continued from
its checkpoint at b. Runs that differ only in it share one warm-up."""
import numpy as np
import pytest

from test_resume import tiny  # noqa: F401 (fixture)
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.objectives.base import Objective
from tf_sharpcf.training import checkpointing, run_dir, train, warmup


def config(folder, **train_fields):
    fields = {"method": "bpr", "epochs": 3, "warmup_epochs": 2, "batch_size": 32, "steps_per_execution": 2,
              "jit_compile": False, "optimizer": "sgd", "lr": 0.5, **train_fields}
    return Config().replace(data={"dataset": str(folder)}, model={"dim": 8}, eval={"eval_every": 3},
                            train=fields)


def weights(out):
    return [np.load(out / name) for name in ("user_embeddings.npy", "item_embeddings.npy")]


@pytest.mark.parametrize("method", ["bpr", "sharpcf"])
def test_the_epochs_after_e_start_train_at_the_method_lr(tiny, tmp_path, method):
    own = {"window": 1} if method == "sharpcf" else {}
    run = train.train_and_evaluate(config(tiny, method=method, method_lr=2.0, **own), tmp_path / "run", verbose=0)
    warm = tmp_path / "warm"                  # E_start epochs at lr, then the rest at 2.0 from its checkpoint
    train.train_and_evaluate(config(tiny, method=method, epochs=2, **own), warm, verbose=0)
    branched = tmp_path / "branched"
    train.train_and_evaluate(config(tiny, method=method, lr=2.0, **own), branched, verbose=0,
                             start=train.Start.branch(warm / run_dir.LAST, 2))
    plain = tmp_path / "plain"
    train.train_and_evaluate(config(tiny, method=method, **own), plain, verbose=0)
    assert run["final"]["epoch"] == 3
    for got, want, other in zip(weights(tmp_path / "run"), weights(branched), weights(plain)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert np.abs(got - other).max() > 1e-3         # not the run at --lr throughout
    saved = checkpointing.read_meta(tmp_path / "run" / run_dir.LAST)
    assert saved["epoch"] == 3


def test_method_lr_equal_to_lr_changes_nothing(tiny, tmp_path):
    train.train_and_evaluate(config(tiny, method_lr=0.5), tmp_path / "same", verbose=0)
    train.train_and_evaluate(config(tiny), tmp_path / "plain", verbose=0)
    for got, want in zip(weights(tmp_path / "same"), weights(tmp_path / "plain")):
        np.testing.assert_array_equal(got, want)


def test_phases_split_bpr_at_e_start_only_when_it_has_a_method_lr():
    bpr = Objective()
    assert train.phases(bpr, 2, 5) == [(0, 5, bpr)]
    assert train.phases(bpr, 2, 5, method_lr=1.0) == [(0, 2, bpr), (2, 5, bpr)]
    assert train.phases(bpr, 0, 5, method_lr=1.0) == [(0, 5, bpr)]
    assert train.phases(bpr, 5, 5, method_lr=1.0) == [(0, 5, bpr)]


def test_runs_that_differ_in_method_lr_share_their_warm_up(tiny):
    a, b = config(tiny, method="sharpcf"), config(tiny, method="sharpcf", method_lr=3.0)
    assert warmup.sharing_key(a) == warmup.sharing_key(b)
    assert warmup.sharing_key(a) != warmup.sharing_key(config(tiny, method="sharpcf", lr=3.0))


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_bad_method_lr_is_named(value):
    with pytest.raises(ConfigError, match="method-lr"):
        Config().replace(train={"method_lr": value}).validate()


def test_shared_warm_ups_are_keyed_and_configured_without_it(tiny):
    from tf_sharpcf.data.readers import load_lightgcn
    from tf_sharpcf.training.early_stopping import phase_start
    from tf_sharpcf.tuning.warm_starts import WarmStarts
    a, b = config(tiny, method="sharpcf", epochs=4), config(tiny, method="sharpcf", epochs=4, method_lr=3.0)
    starts = WarmStarts(tiny / "warmup", load_lightgcn(tiny))
    assert "method_lr" not in starts.key_fields(b)["train"]      # keys cached before the field stay valid
    assert "initial_accumulator" not in starts.key_fields(b)["train"]      # at its default, likewise
    adagrad = b.replace(train={"optimizer": "adagrad"})
    assert starts.key(adagrad) != starts.key(adagrad.replace(train={"initial_accumulator": 1e-6}))
    assert starts.key(a) == starts.key(b)
    assert warmup.warmup_config([b, a]).train.method_lr == 0.0 == warmup.warmup_config([a, b]).train.method_lr
    assert phase_start(b.train) == 2 == phase_start(config(tiny, method_lr=3.0).train)   # BPR too
    assert phase_start(config(tiny).train) == 0


def test_a_run_stopped_after_e_start_resumes_at_the_method_lr(tiny, tmp_path, monkeypatch):
    import signal
    from test_preemption import sigterm_at
    from test_resume import assert_same_run
    from tf_sharpcf.cli.fit import main
    args = ["--dataset", str(tiny), "--method", "bpr", "--optimizer", "sgd", "--lr", "0.5", "--method-lr", "2.0",
            "--epochs", "4", "--warmup-epochs", "2", "--eval-every", "2", "--dim", "8", "--batch-size", "32",
            "--steps-per-execution", "2", "--no-jit", "--quiet", "--preset", "none"]
    assert main([*args, "--output-dir", str(tmp_path / "ref")]) == 0
    sigterm_at(monkeypatch, (3, 2))                    # mid-epoch 3, the first after E_start
    assert main([*args, "--output-dir", str(tmp_path / "run")]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert main(["--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert_same_run(tmp_path / "run", tmp_path / "ref")
