"""The sampler's membership kernel (`SharpcfIsPositive`): the same answers as
the hash table it replaces, so the same negatives, never a training positive."""
import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.data.input_pipeline import NegativeSampler
from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.optim import kernels


def _op_or_skip():
    op = kernels.is_positive_op()
    if op is None:
        pytest.skip("the sampler's membership kernel cannot be built here")
    return op


def test_membership_matches_numpy_on_every_pair(tiny_folder):
    _op_or_skip()
    data = load_lightgcn(tiny_folder)
    fast, plain = NegativeSampler(data), NegativeSampler(data, kernel=False)
    assert fast.table is None and plain.table is not None
    users = np.repeat(np.arange(data.num_users, dtype=np.int32), data.num_items)
    items = np.tile(np.arange(data.num_items, dtype=np.int32), data.num_users)
    train = set(zip(data.train_users.tolist(), data.train_items.tolist()))
    want = np.array([(u, i) in train for u, i in zip(users, items)])
    for sampler in (fast, plain):
        got = sampler.is_positive(tf.constant(users), tf.constant(items)).numpy()
        np.testing.assert_array_equal(got, want)
        grid = sampler.is_positive(tf.constant(users[::data.num_items]),
                                   tf.constant(items.reshape(data.num_users, data.num_items))).numpy()
        np.testing.assert_array_equal(grid.ravel(), want)


@pytest.mark.parametrize("negatives", [1, 7])
def test_kernel_and_hash_table_draw_the_same_negatives(tiny_folder, negatives):
    _op_or_skip()
    data = load_lightgcn(tiny_folder)
    users = tf.constant(np.repeat(data.train_users, 3), tf.int32)
    train = set(zip(data.train_users.tolist(), data.train_items.tolist()))
    for seed in ([3, 0], [11, 7]):
        key = tf.constant(seed, tf.int64)
        fast = NegativeSampler(data)(users, key, negatives).numpy()
        plain = NegativeSampler(data, kernel=False)(users, key, negatives).numpy()
        np.testing.assert_array_equal(fast, plain)
        assert not any((u, j) in train for u, row in zip(users.numpy(), fast) for j in row)


def test_bad_shapes_are_a_clear_error():
    op = _op_or_skip()
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected users \\[B\\], items \\[B, ...\\]"):
        op(tf.constant([0, 1]), tf.constant([[0], [1], [2]]), tf.constant([1], tf.int64),
           tf.constant(4, tf.int64))
