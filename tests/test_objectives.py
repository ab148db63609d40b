import math

import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.objectives.apr import adversarial_perturbation
from tf_sharpcf.objectives.base import bpr_loss, dot, l2_penalty
from tf_sharpcf.objectives.sharpcf import trajectory_loss
from tf_sharpcf.optim.sparse import owner_segments, row_segments, sum_repeated_rows


def test_bpr_loss_matches_hand_computation():
    # pos=[2,0], neg=[0,0]: mean(log1p(exp(-[2,0]))) = (0.1269280 + 0.6931472) / 2 = 0.4100376
    got = bpr_loss(tf.constant([2.0, 0.0]), tf.constant([[0.0], [0.0]]))
    assert float(got) == pytest.approx(0.4100376, abs=1e-6)


def test_bpr_loss_is_stable_for_large_margins():
    got = bpr_loss(tf.constant([-100.0, 100.0]), tf.constant([[0.0], [0.0]]))
    assert float(got) == pytest.approx((100.0 + 0.0) / 2, rel=1e-6)


def test_bpr_gradient_matches_numpy():
    # d/dx mean(softplus(-(x))) with x = pos - neg: -sigmoid(-x) / B
    pos, neg = np.array([1.0, -0.5, 0.3]), np.array([0.2, 0.4, 0.3])
    p, n = tf.Variable(pos, dtype=tf.float64), tf.Variable(neg[:, None], dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = bpr_loss(p, n)
    gp, gn = tape.gradient(loss, [p, n])
    expected = -1 / (1 + np.exp(pos - neg)) / 3
    np.testing.assert_allclose(gp.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(gn.numpy()[:, 0], -expected, rtol=1e-12)


def _numpy_bpr_k(pos, neg):
    """Reference: mean over B·K pairs of ln(1 + exp(neg - pos)), and its
    gradients w.r.t. pos [B] and neg [B, K]."""
    x = neg - pos[:, None]
    loss = np.mean(np.log1p(np.exp(x)))
    s = 1 / (1 + np.exp(-x)) / x.size             # d loss / d neg
    return loss, -s.sum(1), s


def test_bpr_loss_with_k_negatives_and_its_gradient_match_numpy():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(size=4), rng.normal(size=(4, 5))
    p, n = tf.Variable(pos), tf.Variable(neg)
    with tf.GradientTape() as tape:
        loss = bpr_loss(p, n)
    gp, gn = tape.gradient(loss, [p, n])
    want, want_gp, want_gn = _numpy_bpr_k(pos, neg)
    assert float(loss) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(gp.numpy(), want_gp, rtol=1e-12)
    np.testing.assert_allclose(gn.numpy(), want_gn, rtol=1e-12)


def test_bpr_loss_through_embeddings_with_k_negatives_matches_numpy():
    """Gradients w.r.t. user, positive and the K negative rows (Eq. 2-3)."""
    rng = np.random.default_rng(4)
    eu, ei, ej = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.normal(size=(3, 4, 2))
    vu, vi, vj = (tf.Variable(x) for x in (eu, ei, ej))
    with tf.GradientTape() as tape:
        loss = bpr_loss(dot(vu, vi), dot(vu, vj))
    gu, gi, gj = tape.gradient(loss, [vu, vi, vj])
    pos, neg = (eu * ei).sum(1), np.einsum("bd,bkd->bk", eu, ej)
    _, d_pos, d_neg = _numpy_bpr_k(pos, neg)
    np.testing.assert_allclose(gu.numpy(), d_pos[:, None] * ei + np.einsum("bk,bkd->bd", d_neg, ej), rtol=1e-12)
    np.testing.assert_allclose(gi.numpy(), d_pos[:, None] * eu, rtol=1e-12)
    np.testing.assert_allclose(gj.numpy(), d_neg[:, :, None] * eu[:, None, :], rtol=1e-12)


def test_l2_penalty_is_half_sum_of_squares_over_batch():
    # ½ (1+4 + 9+16 + 0) / 2 = 7.5
    e = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    assert float(l2_penalty(e, tf.zeros([2, 2]), tf.zeros([2, 1, 2]))) == pytest.approx(7.5)


def test_l2_penalty_weighs_k_negative_rows_as_one():
    # ½ (‖u‖² + ‖i‖² + (1/K) Σ_k ‖j_k‖²) / B with B = 1, K = 2: ½ (1 + 4 + (9 + 16) / 2) = 8.75
    got = l2_penalty(tf.constant([[1.0, 0.0]]), tf.constant([[0.0, 2.0]]), tf.constant([[[3.0, 0.0], [0.0, 4.0]]]))
    assert float(got) == pytest.approx(8.75)


def test_perturbation_has_norm_eps_and_points_along_the_gradient():
    g = tf.constant([[3.0, 4.0], [0.0, 2.0]])
    delta = adversarial_perturbation(g, tf.constant([5, 9]), eps=0.5).numpy()
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(delta, [[0.3, 0.4], [0.0, 0.5]], rtol=1e-6)


def test_perturbation_sums_gradients_of_duplicate_rows():
    # rows 7 appear twice: its gradient is [3,4]+[0,1] = [3,5], |.| = sqrt(34)
    g = tf.constant([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0]])
    delta = adversarial_perturbation(g, tf.constant([7, 8, 7]), eps=2.0).numpy()
    row7 = 2.0 * np.array([3.0, 5.0]) / math.sqrt(34)
    np.testing.assert_allclose(delta[0], row7, rtol=1e-6)
    np.testing.assert_allclose(delta[2], row7, rtol=1e-6)
    np.testing.assert_allclose(delta[1], [2.0, 0.0], rtol=1e-6)


def test_perturbation_of_zero_gradient_is_zero():
    delta = adversarial_perturbation(tf.zeros([2, 3]), tf.constant([0, 1]), eps=0.5)
    assert np.all(delta.numpy() == 0)


def test_trajectory_loss_is_mean_squared_difference():
    # ((1-0)^2 + (2-0)^2) / 2 = 2.5
    assert float(trajectory_loss(tf.constant([1.0, 2.0]), tf.constant([0.0, 0.0]))) == pytest.approx(2.5)


def test_trajectory_loss_of_identical_scores_is_zero():
    x = tf.constant([0.3, -1.2, 4.0])
    assert float(trajectory_loss(x, x)) == 0.0


def test_trajectory_loss_gradient_flows_only_through_current_scores():
    x, old = tf.Variable([1.0, 3.0]), tf.Variable([0.0, 1.0])
    with tf.GradientTape() as tape:
        loss = trajectory_loss(x, old)
    gx, gold = tape.gradient(loss, [x, old])
    np.testing.assert_allclose(gx.numpy(), [1.0, 2.0])   # 2 (x - old) / B
    assert gold is None


def test_dot_against_k_rows():
    got = dot(tf.constant([[1.0, 2.0]]), tf.constant([[[5.0, 6.0], [7.0, 8.0], [0.0, 1.0]]]))
    assert got.numpy().tolist() == [[17.0, 23.0, 2.0]]


def test_dot_is_row_wise():
    assert dot(tf.constant([[1.0, 2.0], [3.0, 4.0]]), tf.constant([[5.0, 6.0], [7.0, 8.0]])).numpy().tolist() == [17.0, 53.0]


def test_row_segments_group_equal_ids():
    seg = row_segments(tf.constant([9, 3, 9, 1, 3])).numpy()
    assert seg.tolist() == [2, 1, 2, 0, 1]


def test_owner_segments_are_each_ids_first_position():
    seg = owner_segments(tf.constant([9, 3, 9, 1, 3]), num_rows=10).numpy()
    assert seg.tolist() == [0, 1, 0, 3, 1]


@pytest.mark.parametrize("num_rows", [None, 5, 50])
def test_sum_repeated_rows_under_xla_matches_numpy(num_rows):
    """Sort segments (num_rows None) and owner-table segments alike."""
    ids = np.array([4, 1, 4, 4, 0])
    vals = np.arange(10, dtype=np.float32).reshape(5, 2)
    expected = np.stack([vals[ids == i].sum(0) for i in ids])
    got = tf.function(lambda v, i: sum_repeated_rows(v, i, num_rows), jit_compile=True)(
        tf.constant(vals), tf.constant(ids))
    np.testing.assert_allclose(got.numpy(), expected)
