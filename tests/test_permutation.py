"""`input_pipeline.index_permutation` (the parameter-server input's epoch
order) against a numpy reference, and `ShardedBatches` on one device."""
import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.data.input_pipeline import feistel_half_bits, feistel_round_keys, index_permutation

MIX = ((0x85EBCA6B, 13), (0xC2B2AE35, 16))


def reference(positions, n, keys):
    """The same Feistel network and cycle walk in plain Python integers."""
    h = feistel_half_bits(n)
    mask = (1 << h) - 1

    def mix(right, key):
        t = (right ^ key) & 0x7FFFFFFF
        for multiplier, shift in MIX:
            t = ((t & 0x7FFFFFFF) * multiplier) & 0xFFFFFFFF
            t ^= t >> shift
        return t & mask

    def network(x):
        left, right = x >> h, x & mask
        for key in keys:
            left, right = right, left ^ mix(right, key)
        return (left << h) | right

    out = []
    for p in positions:
        x = network(int(p))
        while x >= n:
            x = network(x)
        out.append(x)
    return np.array(out, np.int64)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 97, 1000, 4099])
def test_a_bijection_of_range_n_equal_to_the_reference(n):
    keys = feistel_round_keys(5, 2)
    got = index_permutation(tf.range(n, dtype=tf.int64), n, keys).numpy()
    assert sorted(got.tolist()) == list(range(n))
    np.testing.assert_array_equal(got, reference(range(n), n, keys.numpy().tolist()))


@pytest.mark.parametrize("n", [2 ** 40 + 1, 2 ** 62])
def test_large_n_matches_the_reference_without_overflow(n):
    keys = feistel_round_keys(1, 3)
    positions = [0, 1, n // 3, n - 2, n - 1]
    got = index_permutation(tf.constant(positions, tf.int64), n, keys).numpy()
    np.testing.assert_array_equal(got, reference(positions, n, keys.numpy().tolist()))
    assert all(0 <= x < n for x in got) and len(set(got.tolist())) == len(positions)


def test_any_subset_of_positions_gives_the_same_elements_as_the_whole():
    n, keys = 1000, feistel_round_keys(0, 7)
    whole = index_permutation(tf.range(n, dtype=tf.int64), n, keys).numpy()
    some = tf.constant([999, 0, 512, 513], tf.int64)
    np.testing.assert_array_equal(index_permutation(some, n, keys).numpy(), whole[[999, 0, 512, 513]])


def test_epochs_and_seeds_give_other_orders_and_batches_are_spread():
    n = 10_000
    orders = [index_permutation(tf.range(n, dtype=tf.int64), n, feistel_round_keys(s, e)).numpy()
              for s, e in ((0, 0), (0, 1), (1, 0))]
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.mean(orders[a] == orders[b]) < 0.01
    # a batch of consecutive positions is spread over the table like a random sample
    assert abs(np.corrcoef(np.arange(n), orders[0])[0, 1]) < 0.05
    assert np.std(orders[0][:256]) > 0.8 * np.std(np.arange(n))


def test_out_of_range_n_is_an_error():
    with pytest.raises(ValueError, match="1 <= n <= 2\\*\\*62"):
        index_permutation(tf.constant([0], tf.int64), 0, feistel_round_keys(0, 0))


def test_sharded_batches_cover_each_element_once_per_epoch(tiny_folder):
    """Outside a cluster the same class runs on plain variables: an epoch's
    steps hold every element id once, users/items are the element's own, and
    negatives are never the user's positives."""
    from tf_sharpcf.distribute.parameter_server import ShardedBatches
    data = load_lightgcn(tiny_folder)
    batches = ShardedBatches(data, batch_size=16, seed=3, negatives=2)
    positives = set(zip(data.train_users.tolist(), data.train_items.tolist()))
    for epoch in range(2):
        seen = []
        for step in range(batches.steps_per_epoch):
            ids, users, items, negs = (t.numpy() for t in batches.batch(epoch, step))
            assert negs.shape == (len(ids), 2)
            np.testing.assert_array_equal(users, data.train_users[ids])
            np.testing.assert_array_equal(items, data.train_items[ids])
            assert not any((u, j) in positives for u, row in zip(users, negs) for j in row)
            seen.extend(ids.tolist())
        assert sorted(seen) == list(range(data.num_train))
    again = [t.numpy() for t in batches.batch(1, 2)]
    np.testing.assert_array_equal(again[0], batches.batch(1, 2)[0].numpy())      # a pure function
