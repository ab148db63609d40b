import numpy as np
import pytest

from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.data.input_pipeline import NegativeSampler, chunks_per_epoch, steps_per_epoch, training_dataset


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
        assert negs.shape == (len(users), 1)
        assert all((u, j) not in positives for u, j in zip(users.tolist(), negs[:, 0].tolist()))
        assert negs.min() >= 0 and negs.max() < data.num_items


@pytest.mark.parametrize("k", [3, 16])
def test_k_negatives_are_never_training_items_and_cover_the_rest(tiny_folder, k):
    data = load_lightgcn(tiny_folder)
    positives = set(zip(data.train_users.tolist(), data.train_items.tolist()))
    seen = set()
    for _, users, _, negs in _collect(training_dataset(data, 16, seed=5, start_epoch=0, end_epoch=3,
                                                       negatives=k)):
        assert negs.shape == (len(users), k)
        pairs = {(u, j) for u, row in zip(users.tolist(), negs.tolist()) for j in row}
        assert not pairs & positives
        seen |= pairs
        assert negs.min() >= 0 and negs.max() < data.num_items
    # Every item is some user's non-positive, and 3 epochs of draws hit each.
    assert {j for _, j in seen} == set(range(data.num_items))


def test_k_negatives_are_uniform_over_the_users_non_positives(tiny_folder):
    import tensorflow as tf
    data = load_lightgcn(tiny_folder)
    sampler = NegativeSampler(data)
    mine = set(data.train_items[data.train_users == 0].tolist())
    others = sorted(set(range(data.num_items)) - mine)
    negs = sampler(tf.zeros([100], tf.int32), tf.constant([7, 1], tf.int64), len(others) * 4).numpy()
    counts = np.bincount(negs.ravel(), minlength=data.num_items)
    assert counts[sorted(mine)].sum() == 0
    expected = negs.size / len(others)                       # 400 per item, binomial std ~20
    assert np.all(np.abs(counts[others] - expected) < 6 * np.sqrt(expected))


def test_one_negative_is_the_first_column_of_the_same_stream(tiny_folder):
    """K = 1 draws exactly what a [B] sampler draws (one stateless stream in
    row-major order), so K = 1 runs are today's runs."""
    import tensorflow as tf
    data = load_lightgcn(tiny_folder)
    sampler = NegativeSampler(data)
    users = tf.constant(data.train_users, tf.int32)
    seed = tf.constant([4, 9], tf.int64)
    one = sampler(users, seed, 1).numpy()
    flat = tf.random.stateless_uniform(tf.shape(users), tf.random.experimental.stateless_fold_in(seed, 0),
                                       minval=0, maxval=data.num_items, dtype=tf.int32).numpy()
    ok = ~sampler.is_positive(users, tf.constant(flat)).numpy()
    np.testing.assert_array_equal(one[ok, 0], flat[ok])


def test_negatives_are_the_same_for_every_element_id_layout(tiny_folder):
    """Element ids are one per positive whatever K is."""
    data = load_lightgcn(tiny_folder)
    a = _collect(training_dataset(data, 16, seed=5, start_epoch=0, end_epoch=2, negatives=1))
    b = _collect(training_dataset(data, 16, seed=5, start_epoch=0, end_epoch=2, negatives=4))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for s, t in zip(x[:3], y[:3]):
            np.testing.assert_array_equal(s, t)


def test_sampler_finds_negatives_for_a_nearly_full_user(tmp_path):
    from conftest import write_lightgcn
    folder = write_lightgcn(tmp_path / "dense", {0: list(range(49)), 1: [49]}, {0: [], 1: [1]})
    data = load_lightgcn(folder)
    sampler = NegativeSampler(data)
    import tensorflow as tf
    negs = sampler(tf.zeros([64], tf.int32), tf.constant([1, 2], tf.int64), 8).numpy()
    assert negs.shape == (64, 8) and set(negs.ravel().tolist()) == {49}


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
