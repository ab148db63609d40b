"""Row-wise optimizers against numpy references on tiny tables."""
import numpy as np
import pytest
import tensorflow as tf

from tf_sharpcf.optim.optimizers import make_optimizer


def _lazy_adam_numpy(table, steps, lr, b1=0.9, b2=0.999, eps=1e-7):
    """steps: [(rows, values)] -> table after lazy Adam on the touched rows."""
    table = table.copy()
    m, v = np.zeros_like(table), np.zeros_like(table)
    for t, (rows, values) in enumerate(steps, start=1):
        g = np.zeros_like(table)
        np.add.at(g, rows, values)
        touched = np.unique(rows)
        m[touched] = b1 * m[touched] + (1 - b1) * g[touched]
        v[touched] = b2 * v[touched] + (1 - b2) * g[touched] ** 2
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        table[touched] -= alpha * m[touched] / (np.sqrt(v[touched]) + eps)
    return table


@pytest.mark.parametrize("jit", [False, True])
def test_lazy_adam_updates_only_touched_rows_with_summed_duplicates(jit):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(7, 4)).astype(np.float32)
    steps = [(np.array([1, 3, 1, 6]), rng.normal(size=(4, 4)).astype(np.float32)),
             (np.array([0, 3, 3, 3]), rng.normal(size=(4, 4)).astype(np.float32)),
             (np.array([5, 1, 2, 4]), rng.normal(size=(4, 4)).astype(np.float32))]
    var = tf.Variable(start)
    opt = make_optimizer("lazyadam", 0.1)
    apply = tf.function(lambda rows, values: opt.apply_gradients(
        [(tf.IndexedSlices(values, rows), var)]), jit_compile=jit)
    for rows, values in steps:
        apply(tf.constant(rows, tf.int32), tf.constant(values))
    np.testing.assert_allclose(var.numpy(), _lazy_adam_numpy(start, steps, 0.1), rtol=1e-5, atol=1e-6)


def test_lazy_adam_keeps_untouched_rows_and_moments():
    start = np.arange(12, dtype=np.float32).reshape(6, 2)
    var = tf.Variable(start)
    opt = make_optimizer("lazyadam", 0.1)
    opt.apply_gradients([(tf.IndexedSlices(tf.ones([2, 2]), tf.constant([1, 4])), var)])
    changed = np.any(var.numpy() != start, axis=1)
    assert changed.tolist() == [False, True, False, False, True, False]
    slots = [v.numpy() for v in opt.variables if v.shape == (6, 2)]
    assert len(slots) == 2                                                    # m and v
    for slot in slots:
        assert np.any(slot[[1, 4]] != 0, axis=1).all() and not slot[[0, 2, 3, 5]].any()


def test_lazy_adam_dense_gradient_is_stock_adam():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(3)]
    ours, stock = tf.Variable(start), tf.Variable(start)
    a, b = make_optimizer("lazyadam", 0.05), tf.keras.optimizers.Adam(0.05)
    for g in grads:
        a.apply_gradients([(tf.constant(g), ours)])
        b.apply_gradients([(tf.constant(g), stock)])
    np.testing.assert_allclose(ours.numpy(), stock.numpy(), rtol=1e-5, atol=1e-6)


def test_sgd_is_a_row_wise_step_with_summed_duplicates():
    start = np.ones((4, 2), np.float32)
    var = tf.Variable(start)
    make_optimizer("sgd", 0.5).apply_gradients(
        [(tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0], [1.0, 1.0]]), tf.constant([2, 0, 2])), var)])
    want = start.copy()
    want[2] -= 0.5 * np.array([2.0, 3.0])
    want[0] -= 0.5 * np.array([3.0, 4.0])
    np.testing.assert_allclose(var.numpy(), want)


@pytest.mark.parametrize("initial", [0.1, 1e-6, 0.0])
def test_adagrad_is_a_row_wise_step_from_its_initial_accumulator(initial):
    """Keras' sparse Adagrad, two steps: each occurrence of a row adds its g²
    to the row's accumulator (from `initial_accumulator`), then each
    occurrence steps by lr·g / √(acc + ε); other rows keep value and acc."""
    lr, eps = 0.5, 1e-7
    start = np.ones((4, 2), np.float32)
    var = tf.Variable(start)
    optimizer = make_optimizer("adagrad", lr, initial_accumulator=initial)
    want, acc = start.astype(np.float64), np.full((4, 2), initial)
    for values, rows in (([[1.0, 2.0], [3.0, 4.0], [1.0, 1.0]], [2, 0, 2]), ([[0.5, -1.0]], [2])):
        optimizer.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(rows)), var)])
        values = np.array(values)
        np.add.at(acc, rows, values ** 2)
        np.add.at(want, rows, -lr * values / np.sqrt(acc[rows] + eps))
    np.testing.assert_allclose(var.numpy(), want, rtol=1e-5)
    assert want[1].tolist() == [1.0, 1.0] and want[3].tolist() == [1.0, 1.0]
    np.testing.assert_allclose(optimizer.variables[-1].numpy(), acc, rtol=1e-6)


def test_initial_accumulator_is_checked_and_only_for_adagrad():
    from tf_sharpcf.config import Config
    from tf_sharpcf.errors import ConfigError
    Config().replace(train={"optimizer": "adagrad", "initial_accumulator": 1e-6}).validate()
    Config().replace(train={"optimizer": "sgd", "initial_accumulator": 0.1}).validate()      # the default
    with pytest.raises(ConfigError, match="initial-accumulator.*adagrad only.*'sgd'"):
        Config().replace(train={"optimizer": "sgd", "initial_accumulator": 1e-6}).validate()
    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="initial-accumulator.*>= 0"):
            Config().replace(train={"optimizer": "adagrad", "initial_accumulator": bad}).validate()


# -- the fused CPU kernel ---------------------------------------------------

from tf_sharpcf.optim import kernels  # noqa: E402


def _kernel_or_skip():
    op = kernels.lazy_adam_op()
    if op is None:
        pytest.skip("the fused lazy-Adam kernel cannot be built here (no C++ compiler?)")
    return op


@pytest.mark.parametrize("graph", [False, True])
def test_lazy_adam_row_kernel_matches_numpy_with_duplicates(graph):
    _kernel_or_skip()
    rng = np.random.default_rng(3)
    start = rng.normal(size=(9, 20)).astype(np.float32)       # d not a multiple of the vector width
    steps = [(rng.integers(0, 9, size=12), rng.normal(size=(12, 20)).astype(np.float32))
             for _ in range(4)]
    var = tf.Variable(start)
    opt = make_optimizer("lazyadam", 0.1)
    opt.row_kernel = True
    def apply(rows, values):
        return opt.apply_gradients([(tf.IndexedSlices(values, rows), var)])
    if graph:
        apply = tf.function(apply)
    for rows, values in steps:
        apply(tf.constant(rows, tf.int32), tf.constant(values))
    np.testing.assert_allclose(var.numpy(), _lazy_adam_numpy(start, steps, 0.1), rtol=1e-5, atol=1e-6)


def test_lazy_adam_row_kernel_equals_the_tensorflow_ops():
    """Both implementations on the same Gowalla-like step (d = 128, many duplicates)."""
    _kernel_or_skip()
    rng = np.random.default_rng(4)
    start = rng.normal(size=(300, 128)).astype(np.float32)
    rows = tf.constant(rng.integers(0, 300, size=1000), tf.int32)
    values = tf.constant(rng.normal(size=(1000, 128)).astype(np.float32))
    out = []
    for kernel in (False, True):
        var = tf.Variable(start)
        opt = make_optimizer("lazyadam", 0.01)
        opt.row_kernel = kernel
        for _ in range(3):
            opt.apply_gradients([(tf.IndexedSlices(values, rows), var)])
        out.append(var.numpy())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)


def test_lazy_adam_row_kernel_rejects_an_index_outside_the_table_and_writes_nothing():
    op = _kernel_or_skip()
    var, m, v = (tf.Variable(tf.ones([4, 3])) for _ in range(3))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"index 4 at position 1 is outside \[0, 4\)"):
        op(var.handle, m.handle, v.handle, tf.constant([0, 4]), tf.ones([2, 3]), 0.1, 0.9, 0.999, 1e-7)
    np.testing.assert_array_equal(var.numpy(), np.ones([4, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"grads \[n, 3\]"):
        op(var.handle, m.handle, v.handle, tf.constant([0, 1]), tf.ones([2, 5]), 0.1, 0.9, 0.999, 1e-7)


def test_kernel_switch_off_falls_back(monkeypatch):
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    kernels.lazy_adam_op.cache_clear()
    try:
        assert kernels.lazy_adam_op() is None
    finally:
        kernels.lazy_adam_op.cache_clear()


def test_a_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.delenv(kernels.ENV_SWITCH, raising=False)
    monkeypatch.setenv(kernels.ENV_CACHE, str(tmp_path))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    kernels.lazy_adam_op.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="kernel is unavailable"):
            assert kernels.lazy_adam_op() is None
        assert list(tmp_path.iterdir()) == []            # no half-written library left
    finally:
        kernels.lazy_adam_op.cache_clear()


def test_slots_per_table_sgd_none_adagrad_one_lazyadam_two():
    """What docs/scaling.md counts: 512 bytes per row at dim 128 for SGD's
    table alone, 1,024 with Adagrad's accumulator, 1,536 with Adam's m and v."""
    table = tf.Variable(tf.ones([5, 3]))
    for name, slots in (("sgd", 0), ("adagrad", 1), ("lazyadam", 2)):
        optimizer = make_optimizer(name, 0.1)
        optimizer.build([table])
        assert [v.shape.as_list() for v in optimizer.variables if v.shape.rank == 2] == [[5, 3]] * slots, name


def test_fit_and_tune_take_the_initial_accumulator(tmp_path):
    """`fit --initial-accumulator` reaches the config (and so the optimizer);
    `tune --initial-accumulator-values` searches it."""
    from tf_sharpcf.cli import fit, tune
    args = fit.build_parser().parse_args(["--dataset", str(tmp_path), "--preset", "none", "--optimizer", "adagrad",
                                          "--initial-accumulator", "1e-6"])
    assert fit.config_from_args(args).train.initial_accumulator == 1e-6
    assert fit.config_from_args(fit.build_parser().parse_args(
        ["--dataset", str(tmp_path), "--preset", "none"])).train.initial_accumulator == 0.1
    parsed = tune.build_parser().parse_args(["--dataset", str(tmp_path), "--initial-accumulator-values", "1e-6", "1e-4"])
    assert parsed.initial_accumulator_values == [1e-6, 1e-4]
