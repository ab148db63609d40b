"""K negatives per positive: K = 1 is the one-negative code of old, bit for bit;
K > 1 in APR's perturbation and through the whole training step."""
import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.data.input_pipeline import NegativeSampler, chunks_per_epoch, training_dataset
from tf_sharpcf.model import MatrixFactorization
from tf_sharpcf.objectives.apr import APR, adversarial_perturbation
from tf_sharpcf.objectives.bpr import BPR
from tf_sharpcf.objectives.base import Objective, StepInputs
from tf_sharpcf.optim.optimizers import make_optimizer


# ---------------------------------------------------------------------------
# The one-negative code as it was before K existed (tf_sharpcf 2026-11-28),
# kept here as the reference that K = 1 must reproduce.


def _legacy_sample(sampler, users, seed):
    shape = tf.shape(users)

    def draw(round_):
        s = tf.random.experimental.stateless_fold_in(seed, round_)
        return tf.random.stateless_uniform(shape, s, minval=0, maxval=sampler.num_items, dtype=tf.int32)

    negs = draw(0)
    bad = sampler.is_positive(users, negs)
    _, negs, _ = tf.while_loop(lambda r, n, b: tf.logical_and(tf.reduce_any(b), r < 1000),
                               lambda r, n, b: (r + 1, tf.where(b, draw(r), n), sampler.is_positive(users, tf.where(b, draw(r), n))),
                               (tf.constant(1), negs, bad))
    return negs


def _legacy_bpr(pos, neg):
    return tf.reduce_mean(tf.nn.softplus(neg - pos))


def _legacy_l2(embeddings):
    batch = tf.cast(tf.shape(embeddings[0])[0], tf.float32)
    return 0.5 * tf.add_n([tf.reduce_sum(tf.square(e)) for e in embeddings]) / batch


def _dot(a, b):
    return tf.reduce_sum(a * b, axis=1)


class LegacyBPR(Objective):
    def __call__(self, step):
        eu, ei, ej = step.user_emb, step.pos_emb, step.neg_emb
        bpr = _legacy_bpr(_dot(eu, ei), _dot(eu, ej))
        reg = self.l2 * _legacy_l2([eu, ei, ej])
        return bpr + reg, {"loss": bpr + reg, "bpr_loss": bpr, "reg_loss": reg}


class LegacyAPR(Objective):
    log_names = Objective.log_names + ("adversarial_loss",)
    row_kernel_helps = False

    def __init__(self, eps, l2, adv_weight=1.0):
        super().__init__(l2=l2)
        self.eps, self.adv_weight = eps, adv_weight

    def __call__(self, step):
        eu, ei, ej = step.user_emb, step.pos_emb, step.neg_emb
        users, pos_items, neg_items = step.users, step.pos_items, step.neg_items
        with tf.GradientTape() as inner:
            inner.watch([eu, ei, ej])
            bpr = _legacy_bpr(_dot(eu, ei), _dot(eu, ej))
        gu, gi, gj = inner.gradient(bpr, [eu, ei, ej])
        du = adversarial_perturbation(gu, users, self.eps, step.num_users)
        d_items = adversarial_perturbation(tf.concat([gi, gj], 0), tf.concat([pos_items, neg_items], 0),
                                           self.eps, step.num_items)
        di, dj = tf.split(d_items, 2, axis=0)
        adv = _legacy_bpr(_dot(eu + du, ei + di), _dot(eu + du, ej + dj))
        reg = self.l2 * _legacy_l2([eu, ei, ej])
        loss = bpr + reg + self.adv_weight * adv
        return loss, {"loss": loss, "bpr_loss": bpr, "reg_loss": reg, "adversarial_loss": adv}


# ---------------------------------------------------------------------------


def test_one_negative_is_the_legacy_sampler_draw(tiny_folder):
    data = load_lightgcn(tiny_folder)
    sampler = NegativeSampler(data)
    users = tf.constant(np.repeat(data.train_users, 4), tf.int32)
    for seed in ([3, 0], [3, 1], [11, 7]):
        key = tf.constant(seed, tf.int64)
        new = sampler(users, key, 1).numpy()
        assert new.shape == (users.shape[0], 1)
        np.testing.assert_array_equal(new[:, 0], _legacy_sample(sampler, users, key).numpy())


def _train(data, objective, squeeze, epochs=3, jit=True, negatives=1, optimizer="lazyadam", kernel=None):
    tf.keras.utils.set_random_seed(5)
    model = MatrixFactorization(data.num_users, data.num_items, dim=8, seed=5)
    model.set_objective(objective)
    model.compile(optimizer=make_optimizer(optimizer, 0.01), jit_compile=jit)
    if kernel is not None:
        assert model.row_kernel == kernel
    ds = training_dataset(data, 32, seed=5, start_epoch=0, end_epoch=epochs, batches_per_chunk=4,
                          negatives=negatives)
    if squeeze:      # the one-negative batches of old: neg_item [k, B]
        ds = ds.map(lambda e, u, p, n: (e, u, p, n[..., 0]))
    model.fit(ds, epochs=epochs, steps_per_epoch=chunks_per_epoch(data.num_train, 32, 4), verbose=0)
    return model.user_embedding.numpy(), model.item_embedding.numpy()


@pytest.mark.parametrize("method", ["bpr", "apr"])
def test_k_equal_1_trains_bit_for_bit_like_the_one_negative_code(tiny_folder, method):
    """Same seed, XLA on (with the fused row kernel where `fit` uses it)."""
    data = load_lightgcn(tiny_folder)
    new = BPR(l2=0.01) if method == "bpr" else APR(eps=0.3, adv_weight=1.0, l2=0.01)
    old = LegacyBPR(l2=0.01) if method == "bpr" else LegacyAPR(eps=0.3, l2=0.01)
    got = _train(data, new, squeeze=False)
    want = _train(data, old, squeeze=True)
    for g, w in zip(got, want):
        if method == "bpr":
            np.testing.assert_array_equal(g, w)
        else:
            # APR scores its perturbed pair through one `eu + du` node
            # (`items.perturbed`), where the one-negative code added it twice:
            # eu's gradient sums the same three terms in another order (2e-8).
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)


def _numpy_perturbation(grads, ids, eps):
    out = np.zeros_like(grads)
    for r in range(len(ids)):
        g = grads[ids == ids[r]].sum(0)
        n = np.linalg.norm(g)
        out[r] = eps * g / n if n > 0 else 0.0
    return out


def test_apr_with_k_negatives_perturbs_user_positive_and_every_negative_row():
    """Δ of each row = ρ·g/‖g‖ with g the BPR gradient w.r.t. that table row,
    summed over every position (positive or negative) that holds it."""
    rng = np.random.default_rng(1)
    num_users, num_items, dim, batch, k = 3, 5, 4, 4, 3
    users_emb = rng.normal(size=(num_users, dim)).astype(np.float32).astype(np.float64)
    items_emb = rng.normal(size=(num_items, dim)).astype(np.float32).astype(np.float64)
    users, pos = np.array([0, 1, 0, 2]), np.array([1, 2, 3, 1])
    neg = np.array([[0, 4, 4], [1, 0, 3], [2, 4, 0], [0, 0, 2]])    # item 1 is a positive and a negative
    eps = 0.7

    def loss_np(eu, ei, ej):
        x = np.einsum("bkd,bd->bk", ej, eu) - (eu * ei).sum(1)[:, None]
        return np.mean(np.log1p(np.exp(x)))

    # numpy gradients (analytic) w.r.t. the gathered rows
    eu, ei, ej = users_emb[users], items_emb[pos], items_emb[neg]
    x = np.einsum("bkd,bd->bk", ej, eu) - (eu * ei).sum(1)[:, None]
    s = 1 / (1 + np.exp(-x)) / x.size
    gu = np.einsum("bk,bkd->bd", s, ej) - s.sum(1)[:, None] * ei
    gi = -s.sum(1)[:, None] * eu
    gj = s[:, :, None] * eu[:, None, :]
    du = _numpy_perturbation(gu, users, eps)
    d_items = _numpy_perturbation(np.concatenate([gi, gj.reshape(-1, dim)]), np.concatenate([pos, neg.ravel()]), eps)
    di, dj = d_items[:batch], d_items[batch:].reshape(batch, k, dim)
    want_adv = loss_np(eu + du, ei + di, ej + dj)

    ut, it = tf.constant(users_emb, tf.float32), tf.constant(items_emb, tf.float32)
    step = StepInputs(None, tf.constant(users), tf.constant(pos), tf.constant(neg), tf.gather(ut, users),
                      tf.gather(it, pos), tf.gather(it, neg), tf.constant(0, tf.int64), num_users, num_items)
    _, logs = APR(eps=eps, adv_weight=1.0)(step)
    assert float(logs["bpr_loss"]) == pytest.approx(loss_np(eu, ei, ej), rel=1e-5)
    assert float(logs["adversarial_loss"]) == pytest.approx(want_adv, rel=1e-5)
    # the adversarial loss is larger than the clean one: Δ points uphill
    assert float(logs["adversarial_loss"]) > float(logs["bpr_loss"])


@pytest.mark.parametrize("method", ["bpr", "apr"])
def test_k_negatives_train_through_the_compiled_step_and_lower_the_loss(tiny_folder, method):
    """K = 4 through XLA with the fused row kernel, and without XLA: the same
    tables up to float rounding."""
    data = load_lightgcn(tiny_folder)
    make = (lambda: BPR(l2=0.01)) if method == "bpr" else (lambda: APR(eps=0.3, l2=0.01, negatives=4))
    from tf_sharpcf.optim import kernels
    # K > 1: the fused row kernel for both (APR's all-XLA step is faster only at K = 1)
    xla = _train(data, make(), squeeze=False, negatives=4, epochs=2,
                 kernel=kernels.lazy_adam_op() is not None)
    graph = _train(data, make(), squeeze=False, negatives=4, epochs=2, jit=False)
    for a, b in zip(xla, graph):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_stored_config_from_before_k_means_one_negative():
    """A run's config.json written before `negatives` existed was a K = 1 run,
    whatever today's default; a hand-written config takes the default."""
    from tf_sharpcf.config import Config
    old = Config().to_dict()
    del old["train"]["negatives"]
    assert Config.from_stored(old).train.negatives == 1
    assert Config.from_dict(old).train.negatives == Config().train.negatives
    assert Config.from_stored(Config().replace(train={"negatives": 16}).to_dict()).train.negatives == 16


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_invalid_k_is_a_clear_config_error(bad):
    from tf_sharpcf.config import Config
    from tf_sharpcf.errors import ConfigError
    with pytest.raises(ConfigError, match=r"invalid --negatives: \(K\) must be an integer >= 1"):
        Config().replace(train={"negatives": bad}).validate()
