import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.objectives.trajectory import TrajectoryTable


def test_reads_what_was_written_exactly_window_epochs_earlier():
    table = TrajectoryTable(window=3, num_elements=4)
    ids = tf.constant([2, 0])
    written = {}
    for epoch in range(8):
        old = table.lookup(ids, epoch).numpy()
        expected = written.get(epoch - 3, np.zeros(2))
        np.testing.assert_array_equal(old, expected)
        scores = np.array([10.0 * epoch + 1, 10.0 * epoch + 2], np.float32)
        table.update(ids, tf.constant(scores), epoch)
        written[epoch] = scores


def test_update_touches_only_its_slot_and_ids():
    table = TrajectoryTable(window=2, num_elements=3)
    table.update(tf.constant([1]), tf.constant([5.0]), epoch=0)
    table.update(tf.constant([1]), tf.constant([7.0]), epoch=1)
    np.testing.assert_array_equal(table.by_epoch().numpy(), [[0, 5, 0], [0, 7, 0]])


def test_table_is_filled_after_window_epochs():
    table = TrajectoryTable(window=3, num_elements=1)
    assert [bool(table.is_filled(e)) for e in range(5)] == [False, False, False, True, True]


def test_table_is_non_trainable_and_float32():
    table = TrajectoryTable(window=2, num_elements=5)
    assert not table.scores.trainable and table.scores.dtype == tf.float32
    assert table.by_epoch().shape == (2, 5)


def test_exchange_equals_lookup_then_update_with_one_gather_and_one_scatter():
    rng = np.random.default_rng(0)
    a, b = TrajectoryTable(window=3, num_elements=6), TrajectoryTable(window=3, num_elements=6)
    start = rng.normal(size=(6, 3)).astype(np.float32)
    a.scores.assign(start), b.scores.assign(start)
    for epoch in range(5):
        ids = tf.constant(rng.permutation(6)[:4], tf.int32)
        scores = tf.constant(rng.normal(size=4).astype(np.float32))
        want = a.lookup(ids, epoch).numpy()
        a.update(ids, scores, epoch)
        got, _ = b.exchange(ids, scores, epoch)
        np.testing.assert_array_equal(got.numpy(), want)
        np.testing.assert_array_equal(b.scores.numpy(), a.scores.numpy())
    graph = tf.function(lambda i, s: b.exchange(i, s, tf.constant(1, tf.int64))[0]).get_concrete_function(
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceGather") == 1 and ops.count("ResourceScatterUpdate") == 1, ops


@pytest.mark.parametrize("window", [1, 3])
def test_retry_safe_table_reads_e_minus_window_and_a_rerun_reads_the_same(window):
    """E + 1 slots: epoch e writes slot e mod (E+1) and reads (e - E) mod (E+1),
    so running a step twice (a retried closure) reads the same old scores."""
    table = TrajectoryTable(window=window, num_elements=4, retry_safe=True)
    assert table.slots == window + 1 and table.scores.shape == (4, window + 1)
    ids = tf.constant([3, 1])
    written = {}
    for epoch in range(3 * (window + 1)):
        scores = tf.constant([10.0 * epoch + 1, 10.0 * epoch + 2])
        first, _ = table.exchange(ids, scores, epoch)
        again, _ = table.exchange(ids, scores + 0.5, epoch)            # the re-run, other scores
        expected = written.get(epoch - window, np.zeros(2, np.float32))
        np.testing.assert_array_equal(first.numpy(), expected)
        np.testing.assert_array_equal(again.numpy(), expected)
        np.testing.assert_array_equal(table.lookup(ids, epoch).numpy(), expected)
        written[epoch] = scores.numpy() + 0.5                          # the last write stays
        assert bool(table.is_filled(epoch)) == (epoch >= window)


def test_the_plain_table_has_window_slots_and_a_rerun_would_read_its_own_write():
    """Why the retry-safe layout exists: with E slots the read and the write
    slot are the same one."""
    table = TrajectoryTable(window=2, num_elements=2)
    assert table.slots == 2
    table.exchange(tf.constant([0]), tf.constant([5.0]), 4)
    again, _ = table.exchange(tf.constant([0]), tf.constant([6.0]), 4)
    assert again.numpy()[0] == 5.0
