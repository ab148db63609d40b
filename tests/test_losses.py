"""Losses on scores (`losses.py`, `objectives/losses.py`) and cosine scores:
numpy references on a few rows, one contract every registered loss meets,
and each loss under each method through the fused kernel and the gathered
step."""
import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf import losses, methods
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.objectives.losses import bpr_loss, cosine, hardest_loss, softmax_loss

POS = np.array([1.0, -0.5, 2.0], np.float32)
NEG = np.array([[0.5, 1.5, -1.0], [0.0, -2.0, 0.3], [2.5, 1.0, 0.0]], np.float32)


def _grads(fn, pos, neg):
    p, n = tf.Variable(pos), tf.Variable(neg)
    with tf.GradientTape() as tape:
        value = fn(p, n)
    gp, gn = tape.gradient(value, [p, n])
    return float(value), gp.numpy(), gn.numpy()


def test_softmax_loss_and_its_gradient_match_numpy():
    tau = 0.5
    logits = np.concatenate([POS[:, None], NEG], 1) / tau
    lse = np.log(np.exp(logits).sum(1))
    want = np.mean(lse - logits[:, 0])
    prob = np.exp(logits - lse[:, None])                       # [B, 1 + K]
    value, gp, gn = _grads(lambda p, n: softmax_loss(p, n, tau), POS, NEG)
    assert value == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(gp, (prob[:, 0] - 1) / tau / 3, rtol=1e-5)
    np.testing.assert_allclose(gn, prob[:, 1:] / tau / 3, rtol=1e-5)


def test_softmax_loss_is_stable_for_large_scores_and_takes_k_1_as_a_vector():
    big = softmax_loss(tf.constant([1e4, -1e4]), tf.constant([[-1e4], [1e4]]), 0.05)
    assert np.isfinite(float(big)) and float(big) == pytest.approx(0.5 * 2e4 / 0.05, rel=1e-6)
    a = softmax_loss(tf.constant(POS), tf.constant(NEG[:, 0]), 0.2)
    b = softmax_loss(tf.constant(POS), tf.constant(NEG[:, :1]), 0.2)
    assert float(a) == float(b)


def test_hardest_loss_trains_only_the_highest_scored_negative():
    value, gp, gn = _grads(hardest_loss, POS, NEG)
    hardest = NEG.max(1)
    assert value == pytest.approx(np.mean(np.log1p(np.exp(hardest - POS))), rel=1e-6)
    sig = 1 / (1 + np.exp(-(hardest - POS)))
    want = np.zeros_like(NEG)
    want[np.arange(3), NEG.argmax(1)] = sig / 3
    np.testing.assert_allclose(gn, want, rtol=1e-5)
    np.testing.assert_allclose(gp, -sig / 3, rtol=1e-5)
    assert float(hardest_loss(tf.constant(POS), tf.constant(NEG[:, 0]))) == pytest.approx(
        float(bpr_loss(tf.constant(POS), tf.constant(NEG[:, 0]))))


def test_cosine_matches_numpy_and_a_zero_row_scores_zero():
    rng = np.random.default_rng(0)
    u, i = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 5, 3)).astype(np.float32)
    u[1] = 0.0
    dots = np.einsum("bd,bkd->bk", u, i)
    got = cosine(tf.constant(dots), tf.constant((u ** 2).sum(1)), tf.constant((i ** 2).sum(2))).numpy()
    norms = np.linalg.norm(u, axis=1)[:, None] * np.linalg.norm(i, axis=2)
    want = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# The contract of every registered loss (benfred/implicit's recommender_base_test style)


@pytest.mark.parametrize("name", losses.names())
class TestEveryLoss:
    def _loss(self, name):
        return losses.make_loss(Config().replace(train={"loss": name}).train)

    def test_it_is_named_and_logged_under_its_name(self, name):
        loss = self._loss(name)
        assert loss.name == name and loss.log_name == losses.get(name).log_name == f"{name}_loss"
        objective = methods.make_objective(Config().replace(train={"loss": name, "method": "bpr"}).train, 10)
        assert loss.log_name in objective.log_names
        assert ("bpr_loss" in objective.log_names) == (name == "bpr")

    def test_it_is_a_finite_scalar_that_falls_as_the_positive_rises(self, name):
        loss = self._loss(name)
        value, gp, gn = _grads(loss, POS, NEG)
        assert np.isfinite(value) and np.all(gp <= 0) and np.all(gn >= 0)
        assert float(loss(tf.constant(POS + 5), tf.constant(NEG))) < value

    def test_k_1_as_a_vector_equals_k_1_as_a_column(self, name):
        loss = self._loss(name)
        assert float(loss(tf.constant(POS), tf.constant(NEG[:, 0]))) == pytest.approx(
            float(loss(tf.constant(POS), tf.constant(NEG[:, :1]))), rel=1e-6)

    def test_its_parameters_are_flags_validated_and_searchable(self, name):
        from tf_sharpcf.cli import fit
        from tf_sharpcf.tuning.search_space import PARAMETERS
        fit_flags = {a for action in fit.build_parser()._actions for a in action.option_strings}
        for p in losses.get(name).params:
            assert p.flag in fit_flags and PARAMETERS[p.name].losses == (name,)
            with pytest.raises(ConfigError, match=f"invalid {p.flag}"):
                Config().replace(train={"loss": name, p.field: p.minimum - (0 if p.above else 1)}).validate()


def test_an_unknown_loss_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="loss.*must be one of bpr, softmax, hardest"):
        Config().replace(train={"loss": "hinge"}).validate()
    with pytest.raises(ConfigError, match="similarity.*must be one of dot, cosine"):
        Config().replace(model={"similarity": "l1"}).validate()


def test_a_loss_parameter_is_searched_only_under_its_loss():
    from tf_sharpcf.tuning.search_space import Space, search_space
    space = search_space("sharpcf", {"temperature": Space.choice(0.05, 0.1)}, "softmax")
    assert space["temperature"] == Space.choice(0.05, 0.1)
    assert "temperature" not in search_space("sharpcf", {}, "softmax")     # searched only when asked
    with pytest.raises(ConfigError, match="temperature applies to --loss softmax only, not bpr"):
        search_space("sharpcf", {"temperature": Space.choice(0.05, 0.1)}, "bpr")


def test_the_warm_up_key_holds_the_loss_and_its_own_parameters_only():
    from tf_sharpcf.training.warmup import sharing_key
    base = Config().replace(train={"loss": "softmax", "temperature": 0.1})
    assert sharing_key(base.replace(train={"method": "apr"})) == sharing_key(base)
    assert sharing_key(base.replace(train={"temperature": 0.2})) != sharing_key(base)
    assert sharing_key(base.replace(train={"loss": "bpr"})) != sharing_key(base)
    bpr = Config()
    assert sharing_key(bpr.replace(train={"temperature": 0.2})) == sharing_key(bpr)  # τ unused by BPR


# ---------------------------------------------------------------------------
# Through the model: the fused kernel against the gathered step


def _train(data, objective, pair_kernel, similarity, negatives=8, epochs=3):
    from tf_sharpcf.data.input_pipeline import chunks_per_epoch, training_dataset
    from tf_sharpcf.model import MatrixFactorization
    from tf_sharpcf.optim.optimizers import make_optimizer
    from tf_sharpcf.training.callbacks import EpochCounter
    tf.keras.utils.set_random_seed(5)
    model = MatrixFactorization(data.num_users, data.num_items, dim=8, seed=5, similarity=similarity)
    if hasattr(objective, "table"):
        model.trajectory = objective.table
    model.set_objective(objective)
    model.compile(optimizer=make_optimizer("sgd", 0.05), jit_compile=True, pair_kernel=pair_kernel,
                  negatives=negatives)
    assert pair_kernel is None or model.pair_kernel == pair_kernel
    ds = training_dataset(data, 32, seed=5, start_epoch=0, end_epoch=epochs, batches_per_chunk=4,
                          negatives=negatives)
    history = model.fit(ds, epochs=epochs, steps_per_epoch=chunks_per_epoch(data.num_train, 32, 4),
                        callbacks=[EpochCounter()], verbose=0)
    return model, history.history


@pytest.mark.parametrize("loss,method,similarity", [
    *[("softmax", m, sim) for m in ("bpr", "apr", "sharpcf") for sim in ("dot", "cosine")],
    ("hardest", "sharpcf", "dot"), ("hardest", "apr", "dot")])
def test_each_loss_under_each_method_trains_the_same_through_the_kernel(tiny_folder, loss, method, similarity):
    from tf_sharpcf.data.readers import load_lightgcn
    from tf_sharpcf.optim import kernels
    if kernels.gather_dot_op() is None:
        pytest.skip("the fused K-negative kernel cannot be built here")
    data = load_lightgcn(tiny_folder)
    train = Config().replace(train={"method": method, "loss": loss, "temperature": 0.5, "lam": 1.0,
                                    "window": 1, "warmup_epochs": 1, "eps": 0.3, "adv_weight": 1.0,
                                    "l2": 0.01, "negatives": 8}).train
    make = lambda: methods.make_objective(train, data.num_train)       # noqa: E731
    if method == "apr" and similarity == "cosine":
        # The kernel has no norms of APR's perturbed rows: the gathered step only.
        with pytest.raises(ValueError, match="pair_kernel=True needs"):
            _train(data, make(), True, similarity)
        model, history = _train(data, make(), False, similarity)
        assert history["adversarial_loss"][-1] > history[f"{loss}_loss"][-1]
        return
    fused_model, fused = _train(data, make(), True, similarity)
    plain_model, plain = _train(data, make(), False, similarity)
    for a, b in ((fused_model.user_embedding, plain_model.user_embedding),
                 (fused_model.item_embedding, plain_model.item_embedding)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert f"{loss}_loss" in plain and "bpr_loss" not in plain
    for name, values in plain.items():
        np.testing.assert_allclose(fused[name], values, rtol=1e-4, atol=1e-6, err_msg=name)
    if method == "sharpcf":
        assert plain["trajectory_loss"][-1] > 0


def test_a_cosine_model_ranks_saves_and_scores_by_cosine(tiny_folder, tmp_path):
    from tf_sharpcf.cli.fit import main as fit_main
    from tf_sharpcf.model import MatrixFactorization
    from tf_sharpcf.training import checkpointing
    out = tmp_path / "run"
    assert fit_main(["--dataset", str(tiny_folder), "--method", "sharpcf", "--loss", "softmax",
                     "--similarity", "cosine", "--temperature", "0.2", "--epochs", "4", "--warmup-epochs", "2",
                     "--dim", "4", "--batch-size", "32", "--negatives", "4", "--eval-every", "2",
                     "--no-jit", "--quiet", "--output-dir", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert "softmax_loss" in rows[0] and "bpr_loss" not in rows[0]
    assert float(rows[-1]["softmax_loss"]) < float(rows[0]["softmax_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["similarity"] == "cosine" and config["train"]["loss"] == "softmax"
    users, items = np.load(out / "user_embeddings.npy"), np.load(out / "item_embeddings.npy")
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)
    # The saved rows are the best checkpoint's tables, normalised: what evaluation ranked.
    model = MatrixFactorization(users.shape[0], items.shape[0], 4, similarity="cosine")
    checkpointing.restore(checkpointing.find(out / "checkpoints" / "best"), model)
    raw_u, raw_i = model.user_embedding.numpy(), model.item_embedding.numpy()
    np.testing.assert_allclose(items, raw_i / np.linalg.norm(raw_i, axis=1, keepdims=True), rtol=1e-5)
    want = (raw_u @ raw_i.T) / np.outer(np.linalg.norm(raw_u, axis=1), np.linalg.norm(raw_i, axis=1))
    np.testing.assert_allclose(model(tf.range(users.shape[0])).numpy(), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(users @ items.T, want, rtol=1e-4, atol=1e-6)
