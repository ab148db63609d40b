"""Optimizers with row-wise (sparse) updates, applied without Keras' overhead.

Embedding gradients are `tf.IndexedSlices`: only the batch's rows change. A
plain scatter update is several times cheaper than the same update through
stock `tf.keras` `apply_gradients` (gradient clipping/deduplication and the
distribution merge call around it), and dense Adam (which decays every row's
moments each step) far more (README, Benchmarks: design measurements). So:

* `sgd`, `adagrad`: Keras' own sparse update rules, called directly.
* `lazyadam` (default): Adam applied to the batch's rows only, as TF Addons'
  LazyAdam did; rows absent from a batch keep their moments. On a CPU-only,
  single-device setup the update runs in a fused C++ kernel
  (`kernels.lazy_adam_op`, the same arithmetic), which shortens BPR and
  SharpCF epochs (`MatrixFactorization.compile`).
* `adam`: stock dense Keras Adam, for comparison (slow on CPU).

Under a non-default `tf.distribute` strategy the gradients are summed across
replicas by Keras' `aggregate_gradients` (an `IndexedSlices` gradient is
all-gathered: every replica's (row, value) pairs, duplicates kept) and each
variable's copy is updated by the same `update_step` in Keras' update context.
Keras' own `apply_gradients` would first merge duplicate rows with
`tf.unique`, which has no XLA kernel and changes Adagrad's sparse rule, which
accumulates g² per occurrence here; skipping it keeps R replicas equal to one
device on the global batch for every optimizer.
"""
from __future__ import annotations

import tensorflow as tf

from tf_sharpcf.optim import kernels
from tf_sharpcf.distribute.strategy import is_mirrored
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.optim.sparse import sum_repeated_rows


class DirectApply:
    """Mixin: `apply_gradients` that calls `update_step` per variable directly.

    Under a strategy: all-reduce SUM across replicas, then Keras' per-copy
    update (`_distributed_apply_gradients_fn`) without its deduplication.
    """

    def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
        grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
        if not grads_and_vars:
            return self.iterations
        distributed = tf.distribute.has_strategy()
        if distributed and not skip_gradients_aggregation:
            grads_and_vars = self.aggregate_gradients(grads_and_vars)
        self._compute_current_learning_rate()
        with tf.init_scope():
            self.build([v for _, v in grads_and_vars])
        if distributed:
            return tf.__internal__.distribute.interim.maybe_merge_call(
                self._distributed_apply_gradients_fn, self._distribution_strategy, grads_and_vars)
        for grad, var in grads_and_vars:
            self.update_step(grad, var)
        return self.iterations.assign_add(1)


class SGD(DirectApply, tf.keras.optimizers.SGD):
    """Plain SGD without momentum: θ_r ← θ_r − lr·g, only the batch's rows.

    tf-keras' SGD keeps a momentum slot even at momentum 0 and updates it and
    the variable densely (`m.assign(m * momentum)`, `variable.assign_add(m)`)
    for sparse gradients too: a full pass over both tables every step. This
    one creates no slot (tf-keras' `build` allocates one per table even at
    momentum 0) and updates only the batch's rows.
    """

    def build(self, var_list):
        tf.keras.optimizers.Optimizer.build(self, var_list)      # the step count, not SGD's slots
        if getattr(self, "_built", False):
            return
        self.momentums = []
        self._built = True

    def update_step(self, gradient, variable):
        lr = tf.cast(self.learning_rate, variable.dtype)
        if isinstance(gradient, tf.IndexedSlices):
            variable.scatter_sub(tf.IndexedSlices(lr * gradient.values, gradient.indices))
        else:
            variable.assign_sub(lr * gradient)


class Adagrad(DirectApply, tf.keras.optimizers.Adagrad):
    """Adagrad; sparse gradients update only their rows and accumulators."""


class LazyAdam(DirectApply, tf.keras.optimizers.Adam):
    """Adam with row-wise (lazy) updates for `tf.IndexedSlices` gradients.

    For a gathered row r with summed gradient g:
      m_r ← β₁ m_r + (1−β₁) g,  v_r ← β₂ v_r + (1−β₂) g²,
      θ_r ← θ_r − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m_r / (√v_r + ε).
    Dense gradients follow stock Adam.

    Two implementations of the row update, equal up to float rounding:
    TensorFlow ops (any device, compiles under XLA): a row that occurs several
    times in the batch gets its summed gradient at every occurrence, so every
    duplicate write stores the same value (static shapes for XLA); and, with
    `row_kernel = True`, the fused CPU kernel `kernels.lazy_adam_op()`, which
    reads and writes each distinct row once. The kernel cannot run inside an
    XLA cluster: `MatrixFactorization.compile` switches it on only when it
    compiles the loss and gradients alone with XLA (see `row_kernel_usable`).
    """

    row_kernel = False

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        lr = tf.cast(self.learning_rate, variable.dtype)
        step = tf.cast(self.iterations + 1, variable.dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, variable.dtype), step)) / (
            1 - tf.pow(tf.cast(self.beta_1, variable.dtype), step))
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        if self.row_kernel:
            beta_1, beta_2, epsilon = (tf.cast(x, tf.float32) for x in (self.beta_1, self.beta_2, self.epsilon))
            return kernels.lazy_adam_op()(variable.handle, m.handle, v.handle,
                                          tf.cast(gradient.indices, tf.int32), gradient.values,
                                          alpha, beta_1, beta_2, epsilon)
        rows = gradient.indices
        g = sum_repeated_rows(gradient.values, rows, variable.shape[0])
        m_rows = self.beta_1 * tf.gather(m, rows) + (1 - self.beta_1) * g
        v_rows = self.beta_2 * tf.gather(v, rows) + (1 - self.beta_2) * tf.square(g)
        new_rows = tf.gather(variable, rows) - alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_update(tf.IndexedSlices(new_rows, rows))


def single_cpu_device(strategy) -> bool:
    """True where the tables live on the CPU (no GPU visible) of one replica,
    without mirrored or parameter-server variables: where the custom CPU
    kernels may run."""
    return (not tf.config.list_logical_devices("GPU") and strategy.num_replicas_in_sync == 1
            and not is_mirrored(strategy) and not isinstance(strategy, tf.distribute.ParameterServerStrategy))


def row_kernel_usable(optimizer, strategy) -> bool:
    """True where `optimizer` can update through the fused CPU kernel: a
    LazyAdam, `single_cpu_device`, and the kernel built (`kernels.lazy_adam_op`)."""
    return isinstance(optimizer, LazyAdam) and single_cpu_device(strategy) and kernels.lazy_adam_op() is not None


def make_optimizer(name: str, lr: float, initial_accumulator: float = 0.1) -> tf.keras.optimizers.Optimizer:
    """lazyadam (default), adagrad, sgd: row-wise updates; adam: dense (slow on CPU).
    initial_accumulator: Adagrad's (Keras' `initial_accumulator_value`); the
    other optimizers have none."""
    # The whole train step is XLA-compiled already; per-variable XLA updates
    # inside it would only add function calls.
    kinds = {"lazyadam": LazyAdam, "adagrad": Adagrad, "sgd": SGD, "adam": tf.keras.optimizers.Adam}
    if name not in kinds:
        raise ConfigError(f"invalid --optimizer: unknown optimizer {name!r}")
    own = {"initial_accumulator_value": initial_accumulator} if name == "adagrad" else {}
    return kinds[name](learning_rate=lr, jit_compile=False, **own)
