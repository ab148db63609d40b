"""The method registry: the paper's three methods as declared, and a toy
objective that is one class plus one registration and then trains through
`fit`, logs to history.csv and is searched by `tune` with no other edit."""
import csv
import json

import pytest
import tensorflow as tf

from tf_sharpcf import methods
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.cli.fit import main as fit_main
from tf_sharpcf.methods import make_objective
from tf_sharpcf.objectives.base import Objective, bpr_loss, dot, l2_penalty
from tf_sharpcf.cli.tune import main as tune_main


class MarginBPR(Objective):
    """BPR with a margin: mean softplus(ŷ_uj + m − ŷ_ui), and the share of
    pairs inside the margin as a log."""

    log_names = Objective.log_names + ("margin_violations",)
    margin = 0.5

    def __call__(self, step):
        eu, ei, ej = step.user_emb, step.pos_emb, step.neg_emb
        pos, neg = dot(eu, ei), dot(eu, ej)
        bpr = bpr_loss(pos - self.margin, neg)
        reg = self.l2 * l2_penalty(eu, ei, ej)
        inside = neg + self.margin > (pos if len(neg.shape) == 1 else pos[:, None])
        loss = bpr + reg
        return loss, {"loss": loss, "bpr_loss": bpr, "reg_loss": reg,
                      "margin_violations": tf.reduce_mean(tf.cast(inside, tf.float32))}


@pytest.fixture
def margin_method():
    methods.register(methods.Method("bpr-margin", "BPR-margin", "tab:red",
                                    lambda t, num_train, retry_safe=False: MarginBPR(l2=t.l2),
                                    extra_logs=("margin_violations",)))
    try:
        yield
    finally:
        methods.unregister("bpr-margin")


def test_the_papers_methods_declare_what_their_objectives_log():
    assert methods.names() == ("bpr", "apr", "sharpcf")
    for method in methods.all_methods():
        config = Config().replace(train={"method": method.name})
        assert make_objective(config.train, 10).log_names == method.log_names, method.name
    assert methods.get("sharpcf").fields == ("lam", "window") and methods.get("apr").warm_start
    assert not methods.get("bpr").warm_start and methods.get("sharpcf").recording is not None


def test_an_unknown_method_is_a_clear_config_error():
    with pytest.raises(Exception, match="method.*must be one of bpr, apr, sharpcf"):
        Config().replace(train={"method": "svd"}).validate()


def test_a_registered_toy_objective_trains_logs_and_is_searched(margin_method, tiny_folder, tmp_path):
    out = tmp_path / "run"
    assert fit_main(["--dataset", str(tiny_folder), "--method", "bpr-margin", "--epochs", "3",
                     "--warmup-epochs", "0", "--dim", "4", "--batch-size", "32", "--negatives", "2",
                     "--eval-every", "3", "--no-jit", "--quiet", "--output-dir", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(0.0 <= float(r["margin_violations"]) <= 1.0 for r in rows)
    assert float(rows[-1]["bpr_loss"]) < float(rows[0]["bpr_loss"])
    assert json.loads((out / "metrics.json").read_text())["method"] == "bpr-margin"

    assert tune_main(["--dataset", str(tiny_folder), "--method", "bpr-margin", "--epochs", "2",
                      "--warmup-epochs", "0", "--dim", "4", "--batch-size", "32", "--no-jit", "--quiet",
                      "--max-trials", "2", "--search", "random", "--no-final", "--eval-every", "1",
                      "--directory", str(tmp_path / "tuning")]) == 0
    trials = list(csv.DictReader(open(tmp_path / "tuning" / "tiny-bpr-margin" / "trials.csv")))
    assert len(trials) == 2 and all(r["status"] == "COMPLETED" for r in trials)
    assert {"lr", "l2"} <= set(trials[0]) and "lambda" not in trials[0]     # its parameters only


def test_only_bpr_and_warm_start_methods_branch_from_the_shared_warm_up(margin_method):
    from tf_sharpcf.training import warmup
    for method, branches in (("bpr", True), ("apr", True), ("sharpcf", True), ("bpr-margin", False)):
        config = Config().replace(train={"method": method, "epochs": 400, "warmup_epochs": 200})
        assert warmup.can_branch(config) == branches, method


def test_the_removed_start_keywords_name_their_replacement(tiny_folder, tmp_path):
    from tf_sharpcf.training.train import train_and_evaluate
    with pytest.raises(TypeError, match="init_checkpoint, start_epoch replaced by start=Start"):
        train_and_evaluate(Config(), tmp_path / "run", init_checkpoint=tmp_path, start_epoch=3)


def test_each_declared_parameter_reaches_fit_tune_and_validation():
    from tf_sharpcf.cli import fit, tune
    from tf_sharpcf.config import Config
    from tf_sharpcf.tuning.search_space import PARAMETERS
    fit_flags = {a for action in fit.build_parser()._actions for a in action.option_strings}
    tune_flags = {a for action in tune.build_parser()._actions for a in action.option_strings}
    for method in methods.all_methods():
        for p in method.params:
            assert p.flag in fit_flags and p.flag not in tune_flags, p
            assert f"{p.flag}-range" in tune_flags and PARAMETERS[p.name].field == p.field, p
            assert method.name in PARAMETERS[p.name].methods
            bad = p.minimum - 1
            with pytest.raises(ConfigError, match=f"invalid {p.flag}: .*got {bad!r}"):
                Config().replace(train={p.field: bad}).validate()
            args = fit.build_parser().parse_args([p.flag, str(p.kind(p.minimum))])
            assert fit.config_from_args(args).train.method == Config().train.method
            assert getattr(fit.config_from_args(args).train, p.field) == p.kind(p.minimum)
