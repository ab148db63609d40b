import numpy as np
import pytest

from tf_sharpcf.datasets import load_lightgcn
from tf_sharpcf.input_pipeline import (NegativeSampler, chunks_per_epoch, steps_per_epoch,
                                       training_dataset)


def _collect(ds):
    return [tuple(np.asarray(t) for t in batch) for batch in ds]


def test_element_ids_and_batches_are_identical_across_runs(tiny_folder):
    data = load_lightgcn(tiny_folder)
    a = _collect(training_dataset(data, 32, seed=3, start_epoch=0, end_epoch=2))
    b = _collect(training_dataset(data, 32, seed=3, start_epoch=0, end_epoch=2))
    assert len(a) == len(b) == 2 * steps_per_epoch(data.num_train, 32)
    for x, y in zip(a, b):
        for s, t in zip(x, y):
            np.testing.assert_array_equal(s, t)


def test_each_epoch_is_a_permutation_of_the_canonical_table(tiny_folder):
    data = load_lightgcn(tiny_folder)
    batches = _collect(training_dataset(data, 32, seed=0, start_epoch=0, end_epoch=2))
    per_epoch = steps_per_epoch(data.num_train, 32)
    epochs = [batches[:per_epoch], batches[per_epoch:]]
    orders = []
    for epoch in epochs:
        ids = np.concatenate([b[0] for b in epoch])
        assert sorted(ids.tolist()) == list(range(data.num_train))
        users = np.concatenate([b[1] for b in epoch])
        items = np.concatenate([b[2] for b in epoch])
        np.testing.assert_array_equal(users, data.train_users[ids])
        np.testing.assert_array_equal(items, data.train_items[ids])
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1]), "epochs must be reshuffled"


def test_a_resumed_epoch_is_the_same_as_in_a_full_run(tiny_folder):
    data = load_lightgcn(tiny_folder)
    full = _collect(training_dataset(data, 32, seed=1, start_epoch=0, end_epoch=3))
    third = _collect(training_dataset(data, 32, seed=1, start_epoch=2, end_epoch=3))
    per_epoch = steps_per_epoch(data.num_train, 32)
    for x, y in zip(full[2 * per_epoch:], third):
        for s, t in zip(x, y):
            np.testing.assert_array_equal(s, t)


def test_negatives_are_never_training_items_of_the_user(tiny_folder):
    data = load_lightgcn(tiny_folder)
    positives = set(zip(data.train_users.tolist(), data.train_items.tolist()))
    for _, users, _, negs in _collect(training_dataset(data, 16, seed=5, start_epoch=0, end_epoch=3)):
        assert all((u, j) not in positives for u, j in zip(users.tolist(), negs.tolist()))
        assert negs.min() >= 0 and negs.max() < data.num_items


def test_sampler_finds_negatives_for_a_nearly_full_user(tmp_path):
    from conftest import write_lightgcn
    folder = write_lightgcn(tmp_path / "dense", {0: list(range(49)), 1: [49]}, {0: [], 1: [1]})
    data = load_lightgcn(folder)
    sampler = NegativeSampler(data)
    import tensorflow as tf
    negs = sampler(tf.zeros([64], tf.int32), tf.constant([1, 2], tf.int64)).numpy()
    assert set(negs.tolist()) == {49}


@pytest.mark.parametrize("k", [1, 2, 5])
def test_chunks_carry_the_same_batches(tiny_folder, k):
    data = load_lightgcn(tiny_folder)
    batches = _collect(training_dataset(data, 16, seed=2, start_epoch=0, end_epoch=2))
    chunks = _collect(training_dataset(data, 16, seed=2, start_epoch=0, end_epoch=2, batches_per_chunk=k))
    assert len(chunks) == 2 * chunks_per_epoch(data.num_train, 16, k)
    unrolled = [tuple(t[s] for t in chunk) for chunk in chunks for s in range(chunk[0].shape[0])]
    assert len(unrolled) == len(batches)
    for x, y in zip(unrolled, batches):
        for s, t in zip(x, y):
            np.testing.assert_array_equal(s, t)
