import numpy as np
import tensorflow as tf

from tf_sharpcf.trajectory import TrajectoryTable


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
