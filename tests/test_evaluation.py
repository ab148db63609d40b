import numpy as np
import pytest

from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.evaluation.ranking import Evaluator
from tf_sharpcf.evaluation.metrics import degree_groups, recall_by_group


def _random_split(rng, users=13, items=17, per_user=6):
    tr_u, tr_i, te_u, te_i = [], [], [], []
    for u in range(users):
        chosen = rng.choice(items, size=per_user, replace=False)
        n_test = rng.integers(0, 3)  # some users have no test items
        tr_u += [u] * (per_user - n_test); tr_i += chosen[n_test:].tolist()
        te_u += [u] * n_test; te_i += chosen[:n_test].tolist()
    a = lambda x: np.asarray(x, np.int32)
    return Interactions("rand", users, items, a(tr_u), a(tr_i), a(te_u), a(te_i))


def _reference(data, U, I, k):
    """A plain per-user numpy loop."""
    recalls, ndcgs = [], []
    for u in range(data.num_users):
        test = set(data.test_items[data.test_users == u].tolist())
        if not test:
            continue
        scores = U[u] @ I.T
        scores[data.train_items[data.train_users == u]] = -np.inf
        ranked = np.argsort(-scores, kind="stable")[:k]
        hits = [1.0 if i in test else 0.0 for i in ranked]
        recalls.append(sum(hits) / len(test))
        dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(test), k)))
        ndcgs.append(dcg / idcg)
    return np.mean(recalls), np.mean(ndcgs)


@pytest.mark.parametrize("scorer", ["blas", "tf"])
@pytest.mark.parametrize("seed", range(4))
def test_evaluator_matches_a_per_user_numpy_loop(seed, scorer):
    rng = np.random.default_rng(seed)
    data = _random_split(rng)
    U = rng.normal(size=(data.num_users, 4)).astype(np.float32)
    I = rng.normal(size=(data.num_items, 4)).astype(np.float32)
    got = Evaluator(data, ks=(3, 5), user_batch=4, scorer=scorer).evaluate(U, I)
    for k in (3, 5):
        recall, ndcg = _reference(data, U, I, k)
        assert got[f"recall@{k}"] == pytest.approx(recall, abs=1e-6)
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6)


def _one_user(train, test, scores):
    a = lambda x: np.asarray(x, np.int32)
    data = Interactions("one", 1, len(scores), a([0] * len(train)), a(train), a([0] * len(test)), a(test))
    return Evaluator(data, ks=(1, 2)).evaluate(np.ones((1, 1), np.float32),
                                               np.asarray(scores, np.float32)[:, None])


def test_recall_ignores_training_items():
    # item 0 scores highest but is a training item: the top-1 is item 1, a test item
    got = _one_user(train=[0], test=[1], scores=[9, 5, 1])
    assert got["recall@1"] == 1.0 and got["ndcg@1"] == 1.0


def test_recall_divides_by_the_number_of_test_items():
    # test items 1 and 2; top-1 is item 1: recall@1 = 1/2, ndcg@1 = 1/1
    got = _one_user(train=[], test=[1, 2], scores=[0, 5, 1])
    assert got["recall@1"] == 0.5 and got["ndcg@1"] == 1.0


def test_ndcg_discounts_a_hit_at_rank_two():
    # ranks: item 0 (miss), item 1 (hit): dcg = 1/log2(3), idcg = 1
    got = _one_user(train=[], test=[1], scores=[5, 4, 0])
    assert got["ndcg@2"] == pytest.approx(1 / np.log2(3))
    assert got["recall@2"] == 1.0


def test_degree_groups_match_a_hand_count():
    degree = np.array([0, 99, 100, 150, 199, 200, 299, 300, 1000])
    assert degree_groups(degree).tolist() == [0, 0, 1, 1, 1, 2, 2, -1, -1]


def test_recall_by_group_counts_hits_per_group():
    # user 0: tests {1 (g0), 2 (g1)}, top-2 = [1, 3] -> g0 recall 1, g1 recall 0
    # user 1: tests {3 (g1)},        top-2 = [3, 0] -> g1 recall 1
    top = np.array([[1, 3], [3, 0]])
    groups = np.array([0, 0, 1, 1])
    got = recall_by_group(top, np.array([0, 1]), np.array([0, 0, 1]), np.array([1, 2, 3]), groups)
    assert got == {0: (1.0, 1), 1: (0.5, 2)}


@pytest.mark.parametrize("scorer", ["blas", "tf"])
@pytest.mark.parametrize("group", [1, 3, 8, 64])
@pytest.mark.parametrize("seed", range(3))
def test_two_stage_top_k_matches_numpy_with_masks_and_ties(group, seed, scorer):
    """grouped_top_k (through Evaluator.top_k, either scorer) against a stable
    numpy argsort. Integer scores make ties common; one user has all but 3
    items masked. Three user batches share the 'blas' scorer's buffer."""
    rng = np.random.default_rng(seed)
    users, items, k = 9, 203, 7
    tr_u, tr_i = [], []
    for u in range(users):
        n = items - 3 if u == 4 else int(rng.integers(0, 60))
        chosen = rng.choice(items, size=n, replace=False)
        tr_u += [u] * n; tr_i += chosen.tolist()
    te_u = np.arange(users, dtype=np.int32)
    a = lambda x: np.asarray(x, np.int32)
    data = Interactions("ties", users, items, a(tr_u), a(tr_i), te_u, a(rng.integers(0, items, users)))
    U = rng.integers(-2, 3, size=(users, 3)).astype(np.float32)
    I = rng.integers(-2, 3, size=(items, 3)).astype(np.float32)
    ev = Evaluator(data, ks=(k,), user_batch=4, group_size=group, scorer=scorer)
    top, hits = ev.top_k(U, I)
    for u in range(users):
        scores = U[u] @ I.T
        scores[data.train_items[data.train_users == u]] = -np.inf
        want = np.argsort(-scores, kind="stable")[:k]
        assert top[u].tolist() == want.tolist(), (u, group)
        assert hits[u].tolist() == [int(i) == int(data.test_items[u]) for i in want]


def test_unknown_scorer_is_rejected():
    data = _random_split(np.random.default_rng(0))
    with pytest.raises(ValueError, match="scorer 'gpu'"):
        Evaluator(data, scorer="gpu")


def test_blas_scores_reach_tensorflow_without_a_copy():
    """The aligned buffer is wrapped, not copied, by DLPack."""
    import tensorflow as tf
    from tf_sharpcf.evaluation.ranking import _aligned_empty
    buf = _aligned_empty((3, 5))
    assert buf.ctypes.data % 64 == 0
    buf[:] = 1.0
    wrapped = tf.experimental.dlpack.from_dlpack(buf.__dlpack__())
    buf[1, 2] = 7.0
    assert float(wrapped[1, 2]) == 7.0


def test_metric_names_match_what_metrics_from_hits_computes():
    from tf_sharpcf.evaluation.metrics import column_names, is_metric, metrics_from_hits
    hits = np.array([[True, False, True], [False, False, True]])
    got = metrics_from_hits(hits, np.array([2, 1]), ks=(1, 3))
    assert list(got) == column_names((1, 3)) == ["recall@1", "ndcg@1", "recall@3", "ndcg@3"]
    assert all(is_metric(c) for c in got)
    assert not any(is_metric(c) for c in ("loss", "eval_seconds", "recall", "recall@", "val_recall@20"))
