"""The fused K-negative kernel (`SharpcfGatherDot`, `objectives/items.FusedItems`):
its scores and gradients against numpy on a few rows, and whole tiny training
runs through it against the gathered-row step."""
import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.data.input_pipeline import chunks_per_epoch, training_dataset
from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.model import MatrixFactorization
from tf_sharpcf.objectives.apr import APR
from tf_sharpcf.objectives.base import Objective, bpr_loss, dot
from tf_sharpcf.objectives.bpr import BPR
from tf_sharpcf.objectives.sharpcf import SharpCF
from tf_sharpcf.objectives.trajectory import TrajectoryTable
from tf_sharpcf.optim import kernels
from tf_sharpcf.optim.kernels import gather_dot
from tf_sharpcf.optim.optimizers import make_optimizer
from tf_sharpcf.training.callbacks import EpochCounter


def _op_or_skip():
    op = kernels.gather_dot_op()
    if op is None:
        pytest.skip("the fused K-negative kernel cannot be built here")
    return op


# rows: 3 users (rows 0 and 2 are the same user's row, as a batch holds it
# twice); table: 4 items of d = 2; ids [3, 3] with item 1 three times and item
# 3 never. With weights w (on the scores) and w2 (on the squared norms):
#   scores[b, c]      = rows[b] · table[ids[b, c]]
#   g_rows[b]         = Σ_c w[b, c] table[ids[b, c]]
#   g_table[i]        = Σ_{(b, c): ids[b, c] = i} (w[b, c] rows[b] + 2 w2[b, c] table[i])
# e.g. g_table[1] = w[0,1] rows[0] + w[1,0] rows[1] + w[2,2] rows[2]
#                   + 2 (w2[0,1] + w2[1,0] + w2[2,2]) table[1].
ROWS = np.array([[1.0, 2.0], [-1.0, 0.5], [1.0, 2.0]], np.float32)
TABLE = np.array([[0.5, -1.0], [2.0, 1.0], [0.0, 3.0], [9.0, 9.0]], np.float32)
IDS = np.array([[0, 1, 2], [1, 0, 0], [2, 2, 1]], np.int32)
W = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0], [0.25, 2.0, -0.5]], np.float32)
W2 = np.array([[0.1, 0.2, 0.0], [-0.3, 0.0, 0.5], [1.0, 0.0, 0.2]], np.float32)


def _numpy_reference():
    gathered = TABLE[IDS]                                        # [B, C, d]
    scores = np.einsum("bd,bcd->bc", ROWS, gathered)
    sq = (gathered ** 2).sum(-1)
    g_rows = np.einsum("bc,bcd->bd", W, gathered)
    g_table = np.zeros_like(TABLE)
    for b in range(3):
        for c in range(3):
            i = IDS[b, c]
            g_table[i] += W[b, c] * ROWS[b] + 2 * W2[b, c] * TABLE[i]
    return scores, sq, g_rows, g_table


@pytest.mark.parametrize("kind", ["fused", "reference"])
def test_scores_and_gradients_match_numpy(kind):
    call = (lambda *a: gather_dot.fused(_op_or_skip(), *a)) if kind == "fused" else gather_dot.reference
    rows, table = tf.constant(ROWS), tf.Variable(TABLE)
    with tf.GradientTape() as tape:
        tape.watch(rows)
        out = call(rows, table, tf.constant(IDS))
        loss = tf.reduce_sum(out.scores * W) + tf.reduce_sum(out.sq_norms * W2)
    g_rows, g_table = tape.gradient(loss, [rows, table])
    scores, sq, want_rows, want_table = _numpy_reference()
    np.testing.assert_allclose(out.scores.numpy(), scores, rtol=1e-6)
    np.testing.assert_allclose(out.sq_norms.numpy(), sq, rtol=1e-6)
    np.testing.assert_array_equal(out.unique.numpy(), [0, 1, 2])
    np.testing.assert_array_equal(out.unique.numpy()[out.inverse.numpy()], IDS)
    np.testing.assert_allclose(g_rows.numpy(), want_rows, rtol=1e-6)
    assert isinstance(g_table, tf.IndexedSlices)
    if kind == "fused":     # one summed row per distinct id (item 3, never drawn, gets none)
        np.testing.assert_array_equal(g_table.indices.numpy(), [0, 1, 2])
    np.testing.assert_allclose(tf.convert_to_tensor(g_table).numpy(), want_table, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch, cols, items", [(37, 9, 11), (512, 80, 300)])
def test_fused_and_reference_agree_on_random_input_inside_a_graph(batch, cols, items):
    """The second size has 40,960 pairs: above the kernel's inline bound, so
    its work is split over the CPU threads."""
    op = _op_or_skip()
    rng = np.random.default_rng(3)
    rows = tf.constant(rng.normal(size=(batch, 16)), tf.float32)
    table = tf.constant(rng.normal(size=(items, 16)), tf.float32)
    ids = tf.constant(rng.integers(0, items, size=(batch, cols)), tf.int32)
    w = tf.constant(rng.normal(size=(batch, cols)), tf.float32)

    @tf.function
    def grads(call):
        with tf.GradientTape() as tape:
            tape.watch([rows, table])
            out = call(rows, table, ids)
            loss = tf.reduce_sum(out.scores * w) + tf.reduce_sum(out.sq_norms)
        g_rows, g_table = tape.gradient(loss, [rows, table])
        return out.scores, g_rows, tf.convert_to_tensor(g_table)

    got = grads(lambda *a: gather_dot.fused(op, *a))
    want = grads(gather_dot.reference)
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w_.numpy(), rtol=1e-5, atol=1e-5)


def test_an_id_outside_the_table_is_a_clear_error():
    op = _op_or_skip()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"id 4 at position 1 is outside \[0, 4\)"):
        op(tf.constant(ROWS[:1]), tf.constant(TABLE), tf.constant([[0, 4]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rows \[B, d\] and table \[N, d\]"):
        op(tf.constant(ROWS), tf.ones([4, 3]), tf.constant(IDS))


def _train(data, make_objective, pair_kernel, negatives, optimizer="sgd", epochs=3):
    tf.keras.utils.set_random_seed(5)
    model = MatrixFactorization(data.num_users, data.num_items, dim=8, seed=5)
    objective = make_objective()
    if isinstance(objective, SharpCF):
        model.trajectory = objective.table
    model.set_objective(objective)
    model.compile(optimizer=make_optimizer(optimizer, 0.05 if optimizer == "sgd" else 0.01),
                  jit_compile=True, pair_kernel=pair_kernel, negatives=negatives)
    assert model.pair_kernel == pair_kernel
    ds = training_dataset(data, 32, seed=5, start_epoch=0, end_epoch=epochs, batches_per_chunk=4,
                          negatives=negatives)
    history = model.fit(ds, epochs=epochs, steps_per_epoch=chunks_per_epoch(data.num_train, 32, 4),
                        callbacks=[EpochCounter()], verbose=0)
    return model.user_embedding.numpy(), model.item_embedding.numpy(), history.history


@pytest.mark.parametrize("negatives", [1, 8])
@pytest.mark.parametrize("method", ["bpr", "apr", "sharpcf"])
@pytest.mark.parametrize("optimizer", ["sgd", "lazyadam"])
def test_a_tiny_run_through_the_kernel_matches_the_gathered_step(tiny_folder, method, negatives, optimizer):
    """The same training (tables, losses) up to float rounding, for every
    objective; SharpCF from epoch 1 on (E = 1, its term on after epoch 0)."""
    _op_or_skip()
    data = load_lightgcn(tiny_folder)
    make = {"bpr": lambda: BPR(l2=0.01),
            "apr": lambda: APR(eps=0.3, adv_weight=1.0, l2=0.01, negatives=negatives),
            "sharpcf": lambda: SharpCF(TrajectoryTable(1, data.num_train), lam=1.0, warmup_epochs=1,
                                       l2=0.01)}[method]
    fused = _train(data, make, True, negatives, optimizer)
    plain = _train(data, make, False, negatives, optimizer)
    for a, b in zip(fused[:2], plain[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for name, values in plain[2].items():
        np.testing.assert_allclose(fused[2][name], values, rtol=1e-4, atol=1e-6, err_msg=name)
    if method == "sharpcf":
        assert plain[2]["trajectory_loss"][-1] > 0
    if method == "apr":
        assert plain[2]["adversarial_loss"][-1] > plain[2]["bpr_loss"][-1]


class RowsObjective(Objective):
    """Reads the gathered rows itself: it cannot run on the fused path."""

    def __call__(self, step):
        loss = bpr_loss(dot(step.user_emb, step.pos_emb), dot(step.user_emb, step.neg_emb))
        return loss, {"loss": loss, "bpr_loss": loss, "reg_loss": tf.constant(0.0)}


def test_the_kernel_is_chosen_by_k_and_only_for_objectives_that_read_items(tiny_folder):
    _op_or_skip()
    data = load_lightgcn(tiny_folder)
    from tf_sharpcf.model import FUSED_MIN_NEGATIVES, FUSED_MIN_PAIRS

    def compiled(objective, negatives, jit=True, pair_kernel=None, batch=8192):
        model = MatrixFactorization(data.num_users, data.num_items, dim=4, objective=objective)
        model.compile(optimizer=make_optimizer("sgd", 0.1), jit_compile=jit, negatives=negatives,
                      batch_size=batch, pair_kernel=pair_kernel)
        return model.pair_kernel

    assert compiled(BPR(), FUSED_MIN_NEGATIVES) and not compiled(BPR(), FUSED_MIN_NEGATIVES - 1)
    k = 63
    assert compiled(BPR(), k, batch=FUSED_MIN_PAIRS // (1 + k))
    assert not compiled(BPR(), k, batch=FUSED_MIN_PAIRS // (1 + k) - 1)
    assert compiled(BPR(), 1, pair_kernel=True) and not compiled(BPR(), 64, pair_kernel=False)
    assert not compiled(BPR(), 64, jit=False)
    assert not RowsObjective.fused_items and not compiled(RowsObjective(), 64)
    with pytest.raises(ValueError, match="pair_kernel=True needs an objective with fused_items"):
        compiled(RowsObjective(), 64, pair_kernel=True)


def test_the_backward_op_checks_what_it_is_given_and_empty_batches_work():
    ops = _op_or_skip()
    table = tf.Variable(TABLE)
    rows, ids = tf.constant(ROWS), tf.constant(IDS)
    scores, sq, unique, offsets, pairs, inverse = ops.resource(rows, table.handle, ids)
    bad_pairs = tf.tensor_scatter_nd_update(pairs, [[0]], [99])
    with pytest.raises(tf.errors.InvalidArgumentError, match="pair 99 is outside"):
        ops.resource_grad(rows, table.handle, unique, offsets, bad_pairs, inverse, scores, sq)
    with pytest.raises(tf.errors.InvalidArgumentError, match="offsets must run from 0"):
        ops.resource_grad(rows, table.handle, unique, offsets + 1, pairs, inverse, scores, sq)
    empty = ops.resource(tf.zeros([0, 2]), table.handle, tf.zeros([0, 3], tf.int32))
    assert empty[0].shape == (0, 3) and empty[2].shape == (0,)
    g_rows, g_values = ops.resource_grad(tf.zeros([0, 2]), table.handle, *empty[2:], empty[0], empty[1])
    assert g_rows.shape == (0, 2) and g_values.shape == (0, 2)
