"""`MatrixFactorization`: user/item embeddings and a generic `train_step`.

The step does not know which method it trains: it opens a tape, asks the
objective for `(loss, logs)`, applies the gradients and averages the logs
(tensorflow/recommenders `models/base.py` does the same with `compute_loss`).
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tf_sharpcf.distribute.replica import global_batch_share, sum_across_replicas
from tf_sharpcf.objectives.base import Objective, StepInputs
from tf_sharpcf.objectives.hard_negatives import hardest_of
from tf_sharpcf.objectives.items import CosineItems, FusedItems, GatheredItems, ScoredItems, SharedItems, pair_ids
from tf_sharpcf.objectives.items import shared_items
from tf_sharpcf.optim import kernels
from tf_sharpcf.optim.optimizers import row_kernel_usable, single_cpu_device
from tf_sharpcf.optim.sparse import gather_rows, table_value

# Where `compile(pair_kernel=None)` scores through the fused K-negative kernel
# instead of the all-XLA step: K >= 8 and at least this many (row, item) pairs
# per step, B (1 + K). Below it the un-XLA'd step's per-op overhead costs more
# than the kernel saves (measured: docs/negatives.md).
FUSED_MIN_NEGATIVES = 8
FUSED_MIN_PAIRS = 65536


class MatrixFactorization(tf.keras.Model):
    """ŷ_ui = e_uᵀ e_i (Eq. 1–2) over [num_users, dim] and [num_items, dim] tables,
    or, with similarity="cosine", e_uᵀ e_i / (‖e_u‖ ‖e_i‖) in training, in
    ranking and in the exported index (`final_embeddings`).

    `epoch` is a non-trainable int64 variable holding the 0-based epoch being
    trained; `train.EpochCounter` sets it, and objectives that depend on the
    epoch (SharpCF's trajectory slot and warm-up) read it inside the graph.
    """

    def __init__(self, num_users: int, num_items: int, dim: int = 128, init_std: float = 0.1,
                 seed: int = 0, objective: Optional[Objective] = None, similarity: str = "dot", **kwargs):
        super().__init__(**kwargs)
        self.num_users, self.num_items, self.dim = int(num_users), int(num_items), int(dim)
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
        self.similarity = similarity
        self.user_embedding = self.add_weight(
            name="user_embedding", shape=[self.num_users, self.dim], dtype=tf.float32,
            initializer=tf.keras.initializers.RandomNormal(stddev=init_std, seed=seed))
        self.item_embedding = self.add_weight(
            name="item_embedding", shape=[self.num_items, self.dim], dtype=tf.float32,
            initializer=tf.keras.initializers.RandomNormal(stddev=init_std, seed=seed + 1))
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Under a tf.distribute strategy every replica's logs are already the
        # global batch's (see `batch_step`): report the first, never their sum.
        self.distribute_reduction_method = "first"
        self._objective, self._trackers = None, {}
        self._xla_gradients = self._gather_dot = self._scored_loss = None
        self._pool, self._shared = 1, 0
        if objective is not None:
            self.set_objective(objective)

    # -- objective ---------------------------------------------------------

    @property
    def objective(self) -> Objective:
        return self._objective

    def set_objective(self, objective: Objective) -> None:
        """Chooses the objective; call `compile` afterwards so the step is retraced."""
        self._objective = objective
        # Metric variables must live under the strategy the model was built in.
        with self.distribute_strategy.scope():
            self._trackers = {name: tf.keras.metrics.Mean(name=name) for name in objective.log_names}

    @property
    def metrics(self):
        return list(self._trackers.values())

    # -- scoring -----------------------------------------------------------

    def embed(self, users, pos_items, neg_items):
        """users, pos_items: [B], neg_items: [B, K] -> gathered embeddings
        [B, dim] (user), [B, dim] (positive), [B, K, dim] (negatives; [B, dim]
        when K = 1, which keeps the one-negative graph, and its float
        arithmetic, exactly as it was before K existed)."""
        if neg_items.shape.rank == 2 and neg_items.shape[1] == 1:
            neg_items = neg_items[:, 0]
        return (gather_rows(self.user_embedding, users), gather_rows(self.item_embedding, pos_items),
                gather_rows(self.item_embedding, neg_items))

    def final_embeddings(self):
        """-> ([num_users, dim], [num_items, dim]) tensors whose dot products are
        the model's scores: the tables, L2-normalised per row for cosine. What
        evaluation ranks by, and what a run saves and exports."""
        users, items = table_value(self.user_embedding), table_value(self.item_embedding)
        if self.similarity == "cosine":
            return tf.math.l2_normalize(users, axis=1), tf.math.l2_normalize(items, axis=1)
        return users, items

    def _rows(self, table, ids):
        rows = gather_rows(table, ids)
        return tf.math.l2_normalize(rows, axis=-1) if self.similarity == "cosine" else rows

    def score(self, users, items):
        """[B] users, [B] items -> [B] float32 scores ŷ_ui."""
        return tf.reduce_sum(self._rows(self.user_embedding, users) * self._rows(self.item_embedding, items), axis=1)

    def call(self, users):
        """[B] users -> [B, num_items] scores against every item."""
        return tf.matmul(self._rows(self.user_embedding, users), self.final_embeddings()[1], transpose_b=True)

    def _hardest(self, user_rows, neg_items):
        """[B, K·M] candidates -> the [B, K] negatives the step trains on (`compile(pool=M)`)."""
        return hardest_of(user_rows, self.item_embedding, neg_items, self._pool, self.similarity == "cosine")

    def _item_side(self, items):
        """`items`, or their cosines (`CosineItems`; `SharedItems` score cosines themselves)."""
        return CosineItems(items) if self.similarity == "cosine" and not isinstance(items, SharedItems) else items

    # -- training ----------------------------------------------------------

    def compile(self, optimizer="rmsprop", jit_compile=None, row_kernel=None, pair_kernel=None,
                negatives=None, batch_size=None, pool=1, shared=0, **kwargs):
        """Keras' compile, with a choice of how the scores and the row-wise update run.

        pair_kernel: None (auto) scores through the fused K-negative kernel
        (`items.FusedItems`) when `jit_compile`, K = `negatives` >=
        FUSED_MIN_NEGATIVES, `batch_size` · (1 + K) >= FUSED_MIN_PAIRS, the
        objective reads only `step.items` (`fused_items`; for cosine it also
        scores once), the tables are on one CPU device and the kernel is
        built; True insists (all but the K bounds); False never. An objective
        that scores once then runs as `scored_step` (the kernel's forward
        pass, `loss_and_score_gradients` under XLA, the kernel's backward
        pass); APR's whole step runs outside XLA.
        row_kernel: None (auto) updates through the fused lazy-Adam CPU kernel
        when `jit_compile`, `optimizers.row_kernel_usable` and the objective's
        `row_kernel_helps`; True insists (but for the objective's); False
        never. XLA then compiles the loss and gradients only. The properties
        `pair_kernel` and `row_kernel` say what was chosen.
        pool: M > 1 when a batch carries M candidates per negative ([B, K·M],
        `dns`): the step keeps the highest-scored of each M (`hardest_of`).
        shared: N > 0 scores every row against one pool, the batch's first N
        drawn negatives (`items.SharedItems`; no pair kernel). Call after `set_objective`.
        """
        if shared and not (self._objective is None or self._objective.fused_items):
            raise ValueError("a shared pool of negatives (shared > 0) needs an objective with fused_items")
        pairs = (pair_kernel is not False and not shared and (bool(jit_compile) or pair_kernel is True)
                 and (pair_kernel is True or ((negatives or 1) >= FUSED_MIN_NEGATIVES
                                              and (batch_size or 0) * (1 + negatives) >= FUSED_MIN_PAIRS))
                 and (self._objective is None or self._objective.fused_items)
                 # the kernel has no norms of perturbed rows (APR's second pass) for cosine
                 and (self.similarity == "dot" or self._objective is None or self._objective.scores_once)
                 and single_cpu_device(self.distribute_strategy) and kernels.gather_dot_op() is not None)
        if pair_kernel and not pairs:
            raise ValueError("pair_kernel=True needs an objective with fused_items, one CPU device and "
                             "the kernel built (kernels.gather_dot_op)")
        self._gather_dot = kernels.gather_dot_op() if pairs else None
        usable = row_kernel_usable(tf.keras.optimizers.get(optimizer), self.distribute_strategy)
        if pairs:
            fused = row_kernel is not False and usable
        else:
            helps = self._objective is None or self._objective.row_kernel_helps
            fused = (bool(jit_compile) and row_kernel is not False and (helps or row_kernel is True) and usable)
        if row_kernel and not fused:
            raise ValueError("row_kernel=True needs jit_compile=True and an optimizer that can use the "
                             "fused kernel (optimizers.row_kernel_usable)")
        self._pool, self._shared = int(pool), int(shared)
        super().compile(optimizer=optimizer, jit_compile=False if (fused or pairs) else jit_compile, **kwargs)
        if hasattr(self.optimizer, "row_kernel"):
            self.optimizer.row_kernel = fused
        self._xla_gradients = tf.function(self.loss_and_gradients, jit_compile=True) if fused and not pairs else None
        scored = pairs and (self._objective is None or self._objective.scores_once)
        self._scored_loss = (tf.function(self.loss_and_score_gradients, jit_compile=bool(jit_compile))
                             if scored else None)

    @property
    def row_kernel(self) -> bool:
        """True when compiled to update through the fused CPU row kernel."""
        return bool(getattr(self.optimizer, "row_kernel", False))

    @property
    def pair_kernel(self) -> bool:
        """True when compiled to score through the fused K-negative kernel."""
        return self._gather_dot is not None

    def train_step(self, data):
        """One call of the compiled train function: one batch (element_id,
        user, pos_item: [B]; neg_items: [B, K]) or a chunk of k (a leading k,
        `training_dataset(batches_per_chunk=k)`) trained in an in-graph loop,
        which under XLA keeps the tables in place (fast CPU epochs). Mirrored
        strategies get one batch per call (`inputs.fit_input`). -> the running
        per-batch means of the objective's logs.
        """
        names = tuple(self._trackers)
        if data[0].shape.rank == 2:
            steps = tf.shape(data[0])[0]

            def body(s, sums):
                logs = self.batch_step(tuple(t[s] for t in data))
                return s + 1, tuple(a + logs[n] for a, n in zip(sums, names))

            # The logs are summed in the loop and the trackers updated once per
            # chunk: a tracker update per batch is a measurable share of an epoch.
            _, sums = tf.while_loop(lambda s, _: s < steps, body,
                                    (tf.constant(0), tuple(tf.constant(0.0) for _ in names)))
            count = tf.cast(steps, tf.float32)
            for name, total in zip(names, sums):
                self._trackers[name].update_state(total / count, sample_weight=count)
        else:
            logs = self.batch_step(data)
            for name in names:
                self._trackers[name].update_state(logs[name])
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def batch_step(self, batch):
        """Ask the objective for (loss, logs) and apply the gradients; -> logs.

        On R > 1 replicas the objective's batch mean over this replica's b_r
        rows is scaled by b_r / B, so the optimizer's all-reduce SUM of the
        gradients is the gradient of the global batch mean; the logs are
        combined the same way (`replica.py`).
        """
        if self._scored_loss is not None:
            return self.scored_step(batch)
        compute = self._xla_gradients or self.loss_and_gradients
        logs, grads = compute(batch)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return logs

    def scored_step(self, batch):
        """The fused step of an objective that scores once: the kernel's forward
        pass, `loss_and_score_gradients` (XLA), the kernel's backward pass,
        the update. -> logs. One CPU device only (no replica scaling)."""
        element_ids, users, pos_items, neg_items = batch
        eu = gather_rows(self.user_embedding, users)
        neg_items = self._hardest(eu, neg_items)
        batch = (element_ids, users, pos_items, neg_items)
        ids = pair_ids(pos_items, neg_items)
        # The resource op reads the table in place: a tensor read would make the
        # update below copy the whole variable (gather_dot.cc).
        table = self.item_embedding.handle
        scores, sq, unique, offsets, pairs, inverse = self._gather_dot.resource(eu, table, ids)
        logs, d_scores, d_sq, d_eu = self._scored_loss(batch, eu, scores, sq)
        g_rows, g_values = self._gather_dot.resource_grad(eu, table, unique, offsets, pairs, inverse,
                                                          d_scores, d_sq)
        # Static shapes: a tf.shape of a variable would read it (a copy, once it is copy-on-read).
        self.optimizer.apply_gradients([
            (tf.IndexedSlices(d_eu + g_rows, users, tf.constant(self.user_embedding.shape.as_list(), tf.int64)),
             self.user_embedding),
            (tf.IndexedSlices(g_values, unique, tf.constant(self.item_embedding.shape.as_list(), tf.int64)),
             self.item_embedding)])
        return logs

    def loss_and_score_gradients(self, batch, eu, scores, sq):
        """The objective on given scores [B, 1 + K] and squared norms, computed at
        eu [B, d] -> (logs, d loss / d scores, d sq, d eu through its own terms)."""
        element_ids, users, pos_items, neg_items = batch
        with tf.GradientTape() as tape:
            tape.watch([eu, scores, sq])
            loss, logs = self._objective(StepInputs(
                element_ids, users, pos_items, neg_items, eu, None, None, self.epoch, self.num_users,
                self.num_items, self._item_side(ScoredItems(scores, sq, eu))))
        grads = tape.gradient(loss, [scores, sq, eu])
        d_scores, d_sq, d_eu = (tf.zeros_like(x) if g is None else g for g, x in zip(grads, (scores, sq, eu)))
        return logs, d_scores, d_sq, d_eu

    def loss_and_gradients(self, batch):
        """-> (logs, gradients of the loss w.r.t. `trainable_variables`)."""
        element_ids, users, pos_items, neg_items = batch
        if self._pool > 1:
            neg_items = self._hardest(gather_rows(self.user_embedding, users), neg_items)
        with tf.GradientTape() as tape:
            if self._shared or self._gather_dot is not None:
                eu, ei, ej = gather_rows(self.user_embedding, users), None, None
                items = (shared_items(self.item_embedding, pos_items, neg_items, self._shared,
                                      self.similarity == "cosine") if self._shared else
                         FusedItems(self._gather_dot, self.item_embedding, pair_ids(pos_items, neg_items)))
            else:
                eu, ei, ej = self.embed(users, pos_items, neg_items)
                items = GatheredItems(ei, ej, pos_items, neg_items)
            loss, logs = self._objective(StepInputs(element_ids, users, pos_items, neg_items, eu, ei, ej,
                                                    self.epoch, self.num_users, self.num_items,
                                                    self._item_side(items)))
            share = global_batch_share(users)
            if share is not None:
                # A replica can get no row of an epoch's short batch: its means
                # are NaN (0/0), and multiply_no_nan makes its share of the
                # loss and of the logs 0.
                loss = tf.math.multiply_no_nan(loss, share)
        grads = tape.gradient(loss, self.trainable_variables)
        if share is not None:
            logs = sum_across_replicas({name: tf.math.multiply_no_nan(value, share)
                                        for name, value in logs.items()})
        return logs, grads

    def get_config(self):
        return {"num_users": self.num_users, "num_items": self.num_items, "dim": self.dim,
                "similarity": self.similarity}
