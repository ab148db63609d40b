"""Negative samplers (`samplers.py`, `data/negatives.py`) and DNS's choice
(`objectives/hard_negatives.py`): numpy references, and one contract every
registered sampler meets."""
import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf import samplers
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.negatives import NegativeSampler, PopularitySampler, negative_key, popularity_cdf
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.objectives.hard_negatives import hardest_of


def _data(num_users=6, num_items=12, seed=0):
    """Item i has about i + 1 interactions (a skewed catalogue); every user has some."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for i in range(num_items):
        for u in rng.choice(num_users, size=min(num_users, i // 2 + 1), replace=False):
            users.append(u)
            items.append(i)
    order = np.lexsort((items, users))
    return Interactions("toy", num_users, num_items, np.asarray(users, np.int32)[order],
                        np.asarray(items, np.int32)[order], np.zeros(0, np.int32), np.zeros(0, np.int32))


def test_popularity_cdf_matches_numpy():
    items = np.array([0, 0, 0, 2, 2, 3])
    np.testing.assert_allclose(popularity_cdf(items, 5, 0.5), np.cumsum([3 ** 0.5, 0, 2 ** 0.5, 1, 0]))
    np.testing.assert_allclose(popularity_cdf(items, 5, 0.0), np.arange(1, 6))


def test_popularity_draws_follow_count_to_the_beta_before_rejection():
    data = _data()
    sampler = PopularitySampler(data, beta=1.0)
    draws = sampler.draw(tf.constant([200_000, 1]), tf.constant([3, 4], tf.int64)).numpy().ravel()
    counts = np.bincount(data.train_items, minlength=data.num_items).astype(float)
    np.testing.assert_allclose(np.bincount(draws, minlength=data.num_items) / draws.size,
                               counts / counts.sum(), atol=3e-3)


def test_hardest_of_keeps_each_negatives_highest_scored_candidate():
    rows = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    table = np.array([[0.1, 0.0], [0.5, 2.0], [0.9, -1.0], [0.0, 3.0]], np.float32)
    cands = np.array([[0, 1, 2, 3, 1, 0], [2, 0, 3, 1, 2, 0]], np.int32)      # K = 2, M = 3
    got = hardest_of(tf.constant(rows), tf.constant(table), tf.constant(cands), 3).numpy()
    scores = np.einsum("bd,bcd->bc", rows, table[cands]).reshape(2, 2, 3)
    want = np.take_along_axis(cands.reshape(2, 2, 3), scores.argmax(2)[..., None], 2)[..., 0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(hardest_of(tf.constant(rows), tf.constant(table), tf.constant(cands), 1), cands)
    long = table * np.array([[1], [9], [1], [1]], np.float32)
    cos = hardest_of(tf.constant(rows), tf.constant(long), tf.constant(cands), 3, cosine=True).numpy()
    unit = long / np.linalg.norm(long, axis=1, keepdims=True)
    scores = np.einsum("bd,bcd->bc", rows, unit[cands]).reshape(2, 2, 3)
    best = np.take_along_axis(cands.reshape(2, 2, 3), scores.argmax(2)[..., None], 2)[..., 0]
    np.testing.assert_array_equal(cos, best)
    assert cos[0, 0] == 0       # by cosine item 0, by dot product the 9x longer item 1


def test_the_uniform_sampler_is_todays_stream():
    data = _data()
    users = tf.constant(data.train_users)
    built = samplers.make_sampler(data, Config().train)
    from tf_sharpcf.data.input_pipeline import NegativeSampler as PipelineSampler
    np.testing.assert_array_equal(built(users, negative_key(0, 3), 4).numpy(),
                                  PipelineSampler(data)(users, negative_key(0, 3), 4).numpy())


@pytest.mark.parametrize("name", samplers.names())
class TestEverySampler:
    def _config(self, name):
        return Config().replace(train={"sampler": name, "beta": 0.75, "candidates": 3}).train

    def test_it_never_returns_a_training_positive_and_is_a_pure_function_of_the_key(self, name):
        data = _data()
        t = self._config(name)
        width = 5 * samplers.pool(t)
        users = tf.constant(np.repeat(np.arange(data.num_users, dtype=np.int32), 50))
        for kernel in (None, False):
            sampler = samplers.make_sampler(data, t, kernel=kernel)
            a = sampler(users, negative_key(7, 2), width).numpy()
            assert a.shape == (users.shape[0], width) and a.min() >= 0 and a.max() < data.num_items
            positives = set(zip(data.train_users.tolist(), data.train_items.tolist()))
            assert not any((u, i) in positives for u, row in zip(users.numpy(), a) for i in row)
            np.testing.assert_array_equal(a, sampler(users, negative_key(7, 2), width).numpy())
            assert not np.array_equal(a, sampler(users, negative_key(7, 3), width).numpy())

    def test_its_parameters_are_flags_validated_and_searchable(self, name):
        from tf_sharpcf.cli import fit
        from tf_sharpcf.tuning.search_space import PARAMETERS
        fit_flags = {a for action in fit.build_parser()._actions for a in action.option_strings}
        for p in samplers.get(name).params:
            assert p.flag in fit_flags and PARAMETERS[p.name].samplers == (name,)
            with pytest.raises(ConfigError, match=f"invalid {p.flag}"):
                Config().replace(train={"sampler": name, p.field: p.minimum - 1}).validate()


def test_a_sampler_parameter_is_searched_only_under_its_sampler():
    from tf_sharpcf.tuning.search_space import Space, search_space
    assert search_space("bpr", {"beta": Space.choice(0.5, 1.0)}, "bpr", "popularity")["beta"].kind == "values"
    with pytest.raises(ConfigError, match="beta applies to --sampler popularity only, not uniform"):
        search_space("bpr", {"beta": Space.choice(0.5, 1.0)}, "bpr", "uniform")


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_a_dns_step_trains_on_the_hardest_candidates(tiny_folder, similarity):
    """compile(pool=M): the loss of a batch of [B, K·M] candidates is the loss
    of the K chosen by `hardest_of`, through the model's step."""
    from tf_sharpcf.data.readers import load_lightgcn
    from tf_sharpcf.model import MatrixFactorization
    from tf_sharpcf.objectives.bpr import BPR
    data = load_lightgcn(tiny_folder)
    model = MatrixFactorization(data.num_users, data.num_items, dim=4, seed=1, similarity=similarity)
    model.set_objective(BPR())
    model.compile(optimizer="sgd", pool=3)
    rng = np.random.default_rng(0)
    users = tf.constant(rng.integers(0, data.num_users, 8), tf.int32)
    pos = tf.constant(rng.integers(0, data.num_items, 8), tf.int32)
    cands = tf.constant(rng.integers(0, data.num_items, (8, 6)), tf.int32)               # K = 2, M = 3
    logs, _ = model.loss_and_gradients((tf.range(8), users, pos, cands))
    chosen = hardest_of(tf.gather(model.user_embedding, users), model.item_embedding, cands, 3,
                        cosine=similarity == "cosine")
    model.compile(optimizer="sgd")                                                        # M = 1
    want, _ = model.loss_and_gradients((tf.range(8), users, pos, chosen))
    assert float(logs["bpr_loss"]) == pytest.approx(float(want["bpr_loss"]), rel=1e-6)
    plain, _ = model.loss_and_gradients((tf.range(8), users, pos, cands[:, ::3]))
    assert float(logs["bpr_loss"]) > float(plain["bpr_loss"])       # harder than the first candidates
