import math

import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.objectives import (adversarial_perturbation, bpr_loss, dot, l2_penalty,
                                   trajectory_loss)
from tf_sharpcf.sparse import owner_segments, row_segments, sum_repeated_rows


def test_bpr_loss_matches_hand_computation():
    # pos=[2,0], neg=[0,0]: mean(log1p(exp(-[2,0]))) = (0.1269280 + 0.6931472) / 2 = 0.4100376
    got = bpr_loss(tf.constant([2.0, 0.0]), tf.constant([0.0, 0.0]))
    assert float(got) == pytest.approx(0.4100376, abs=1e-6)


def test_bpr_loss_is_stable_for_large_margins():
    got = bpr_loss(tf.constant([-100.0, 100.0]), tf.constant([0.0, 0.0]))
    assert float(got) == pytest.approx((100.0 + 0.0) / 2, rel=1e-6)


def test_bpr_gradient_matches_numpy():
    # d/dx mean(softplus(-(x))) with x = pos - neg: -sigmoid(-x) / B
    pos, neg = np.array([1.0, -0.5, 0.3]), np.array([0.2, 0.4, 0.3])
    p, n = tf.Variable(pos, dtype=tf.float64), tf.Variable(neg, dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = bpr_loss(p, n)
    gp, gn = tape.gradient(loss, [p, n])
    expected = -1 / (1 + np.exp(pos - neg)) / 3
    np.testing.assert_allclose(gp.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(gn.numpy(), -expected, rtol=1e-12)


def test_l2_penalty_is_half_sum_of_squares_over_batch():
    # ½ (1+4 + 9+16) / 2 = 7.5
    e = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    assert float(l2_penalty([e])) == pytest.approx(7.5)


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
