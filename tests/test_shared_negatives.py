"""The `shared` sampler: one pool of N negatives per batch, scored by every
row (`objectives/items.SharedItems`), against numpy and against the per-row
path with every row's negatives set to the pool."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf import samplers
from tf_sharpcf.config import Config
from tf_sharpcf.objectives.apr import APR
from tf_sharpcf.objectives.base import Objective, StepInputs
from tf_sharpcf.objectives.items import (MASKED_SCORE, CosineItems, GatheredItems, SharedItems, shared_items,
                                         shared_pool, shared_scores)
from tf_sharpcf.objectives.losses import BPR_LOSS, HARDEST_LOSS, softmax


def test_shared_scores_match_numpy_and_mask_a_rows_own_positive():
    # users u0 = (1, 0), u1 = (0, 2); positives items 3 and 5; pool items (5, 7, 3).
    # e_u0·pool = (1·1 + 0, 2, 0 + 0) = (1, 2, 0) ... item 3 is u0's positive: masked.
    # e_u1·pool = (0 + 2·1, 0, 0 + 2·(-1)) = (2, 0, -2) ... item 5 is u1's positive: masked.
    users = tf.constant([[1.0, 0.0], [0.0, 2.0]])
    pos_rows = tf.constant([[3.0, 1.0], [1.0, 1.0]])
    pool_rows = tf.constant([[1.0, 1.0], [2.0, 0.0], [0.0, -1.0]])
    scores = shared_scores(users, pos_rows, pool_rows, tf.constant([3, 5]), tf.constant([5, 7, 3]))
    np.testing.assert_allclose(scores.pos.numpy(), [3.0, 2.0])
    np.testing.assert_allclose(scores.neg.numpy(), [[1.0, 2.0, MASKED_SCORE], [MASKED_SCORE, 0.0, -2.0]])


def test_the_pool_is_the_first_n_draws_in_row_order():
    drawn = tf.constant([[4, 9], [2, 7], [1, 0]])
    np.testing.assert_array_equal(shared_pool(drawn, 3).numpy(), [4, 9, 2])
    np.testing.assert_array_equal(shared_pool(drawn, 10).numpy(), [4, 9, 2, 7, 1, 0])


def test_draws_per_row_cover_the_pool():
    def t(**fields):
        return dataclasses.replace(Config().train, **fields)
    assert samplers.draws(t(sampler="shared", negatives=256, batch_size=1024)) == 1
    assert samplers.draws(t(sampler="shared", negatives=1000, batch_size=256)) == 4
    assert samplers.draws(t(sampler="uniform", negatives=4)) == 4
    assert samplers.draws(t(sampler="dns", negatives=4, candidates=3)) == 12
    assert samplers.shared(t(sampler="shared", negatives=64)) == 64
    assert samplers.shared(t(sampler="uniform", negatives=64)) == 0


def _tables(seed=0, users=5, items=9, dim=3):
    rng = np.random.default_rng(seed)
    return (tf.Variable(rng.normal(size=(users, dim)).astype(np.float32)),
            tf.Variable(rng.normal(size=(items, dim)).astype(np.float32)))


def _step(u_table, i_table, users, pos, pool, shared, cosine):
    """A StepInputs whose item side is the shared pool, or the per-row rows
    with every row's negatives the pool ([B, N, d] gathered)."""
    eu = tf.gather(u_table, users)
    if shared:
        items = SharedItems(tf.gather(i_table, pos), tf.gather(i_table, pool), pos, pool, cosine)
    else:
        neg = tf.tile(pool[None, :], [len(users), 1])
        items = GatheredItems(tf.gather(i_table, pos), tf.gather(i_table, neg), pos, neg)
        items = CosineItems(items) if cosine else items
    return StepInputs(tf.range(len(users)), users, pos, None, eu, None, None, tf.constant(0, tf.int64),
                      int(u_table.shape[0]), int(i_table.shape[0]), items)


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("objective", [
    Objective(l2=0.1), Objective(loss=softmax(0.5)), Objective(loss=HARDEST_LOSS),
    APR(eps=0.3, adv_weight=2.0, l2=0.1, negatives=3), APR(eps=0.3, loss=softmax(0.5))],
    ids=["bpr", "softmax", "hardest", "apr-bpr", "apr-softmax"])
def test_shared_pool_equals_per_row_negatives_that_are_the_pool(objective, cosine):
    """With no row's positive in the pool, the shared path's loss and table
    gradients are the per-row path's with each row's K negatives = the pool
    (users 0 and 2 repeat, item 4 is both a positive and... not in the pool)."""
    u_table, i_table = _tables()
    users, pos, pool = tf.constant([0, 2, 2, 4]), tf.constant([1, 4, 1, 8]), tf.constant([0, 3, 6])
    out = []
    for shared in (True, False):
        with tf.GradientTape() as tape:
            loss, logs = objective(_step(u_table, i_table, users, pos, pool, shared, cosine))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, [u_table, i_table])]
        out.append((loss.numpy(), [g.numpy() for g in grads], {k: v.numpy() for k, v in logs.items()}))
    (ls, gs, logs_s), (lr, gr, logs_r) = out
    np.testing.assert_allclose(ls, lr, rtol=1e-5)
    for a, b in zip(gs, gr):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert logs_s.keys() == logs_r.keys()
    for k in logs_s:
        np.testing.assert_allclose(logs_s[k], logs_r[k], rtol=1e-5, err_msg=k)


@pytest.mark.parametrize("loss", [BPR_LOSS, softmax(0.5), HARDEST_LOSS], ids=lambda x: x.name)
def test_a_masked_entry_has_no_loss_and_no_gradient(loss):
    """Row 0's positive (item 3) is in the pool: its entry weighs nothing, so
    the loss equals the loss without that entry and the masked copy of item
    3's row gets no gradient from row 0 (BPR's mean still counts the entry)."""
    u_table, i_table = _tables(1)
    users, pos = tf.constant([0, 1]), tf.constant([3, 5])
    with tf.GradientTape(persistent=True) as tape:
        items = SharedItems(tf.gather(i_table, pos), tf.gather(i_table, tf.constant([3, 7])), pos,
                            tf.constant([3, 7]))
        scores = items.evaluate(tf.gather(u_table, users))
        tape.watch(scores.neg)
        value = loss(scores.pos, scores.neg)
    assert tape.gradient(value, scores.neg).numpy()[0, 0] == 0.0       # no weight on the masked entry
    # ... and none reaches the pool row through it: item 3's pool row gets only row 1's term.
    g_pool = tape.gradient(value, items.pool_emb).numpy()
    g_row1 = tape.gradient(value, scores.neg).numpy()[1, 0] * u_table.numpy()[1]
    np.testing.assert_allclose(g_pool[0], g_row1, rtol=1e-5, atol=1e-7)
    u, i = u_table.numpy(), i_table.numpy()
    s_pos = np.array([u[0] @ i[3], u[1] @ i[5]])
    s_neg = np.array([[u[0] @ i[3], u[0] @ i[7]], [u[1] @ i[3], u[1] @ i[7]]])
    softplus = lambda x: np.log1p(np.exp(x))                                # noqa: E731
    if loss.name == "bpr":     # the masked entry counts 0 in a mean over 4
        want = (softplus(s_neg[0, 1] - s_pos[0]) + softplus(s_neg[1] - s_pos[1]).sum()) / 4
    elif loss.name == "softmax":
        lse = lambda row: np.log(np.exp(np.asarray(row) / 0.5).sum())      # noqa: E731
        want = ((lse([s_pos[0], s_neg[0, 1]]) - s_pos[0] / 0.5) + (lse([s_pos[1], *s_neg[1]]) - s_pos[1] / 0.5)) / 2
    else:
        want = (softplus(s_neg[0, 1] - s_pos[0]) + softplus(s_neg[1].max() - s_pos[1])) / 2
    np.testing.assert_allclose(value.numpy(), want, rtol=1e-5)


def test_a_shared_run_trains_through_the_model_and_is_deterministic(tiny_folder, tmp_path):
    """`--sampler shared` end to end: the XLA step with the row kernel, one
    pool of 6 per batch of 4 (2 draws per row); two runs give the same tables."""
    from tf_sharpcf.training.train import train_and_evaluate
    config = Config().replace(
        data={"dataset": str(tiny_folder)}, model={"dim": 4, "similarity": "cosine"},
        train={"sampler": "shared", "negatives": 6, "loss": "softmax", "epochs": 3, "batch_size": 4,
               "optimizer": "lazyadam", "lr": 0.05, "l2": 0.0},
        eval={"ks": (2,), "eval_every": 3})
    a = train_and_evaluate(config, tmp_path / "a", verbose=0)
    b = train_and_evaluate(config, tmp_path / "b", verbose=0)
    ea, eb = np.load(tmp_path / "a" / "item_embeddings.npy"), np.load(tmp_path / "b" / "item_embeddings.npy")
    np.testing.assert_array_equal(ea, eb)
    assert a["final"] == b["final"]
    import csv
    rows = list(csv.DictReader(open(tmp_path / "a" / "history.csv")))
    assert float(rows[-1]["softmax_loss"]) < float(rows[0]["softmax_loss"])


def test_shared_items_gather_from_the_table():
    _, i_table = _tables(2)
    items = shared_items(i_table, tf.constant([1, 2]), tf.constant([[4], [5]]), 1)
    np.testing.assert_array_equal(items.pool_items.numpy(), [4])
    np.testing.assert_allclose(items.pool_emb.numpy(), i_table.numpy()[[4]])
