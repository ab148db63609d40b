"""Data-parallel training with `tf.distribute`: making the strategy, and how replicas stay equal.

Every table (embeddings, optimizer slots, SharpCF's trajectory table) is a
mirrored variable: each replica holds a full copy and the copies stay equal.
A global batch of B rows is cut into R contiguous slices, one per replica, in
replica order (replica r gets rows [⌊rB/R⌋, ⌊(r+1)B/R⌋)), each row keeping its
element id. Training on R replicas then computes what one device computes on
the global batch:

* loss: each replica's objective is a mean over its b_r rows; scaled by
  b_r / B it becomes that replica's share of the global mean, and the
  optimizer's all-reduce SUM of the gradients gives ∇(Σ_r sum_r / B), the
  gradient of the global batch mean. Logs are combined the same way.
* APR: the perturbation of a table row needs the gradient of the global batch
  loss w.r.t. that row: `sum_rows_over_global_batch` all-gathers the
  (row id, b_r/B · gradient) pairs of every replica and sums per id.
* SharpCF: `TrajectoryTable.update` all-gathers the global batch's
  (element id, score) pairs and every replica applies the same scatter to its
  own copy of the table (aggregation NONE: a replica-context write changes
  the local copy only), so the copies stay equal and an element's old score is
  its own whichever replica trained it E epochs earlier.

The in-graph replica maths (the loss share, the all-gathers, the APR row
sums) lives in `replica.py`, a leaf the loss code imports without the data
layer; the per-replica input in `inputs.py`. With one replica (the default strategy) every
helper is the identity and adds no op to the graph.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from tf_sharpcf.config import STRATEGIES
from tf_sharpcf.errors import ConfigError


_strategies = {}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default: one device; mirrored: every local GPU, else every local (logical)
    CPU device; multi-worker: `MultiWorkerMirroredStrategy` over the cluster in
    `TF_CONFIG` (must be created before TensorFlow runs any op);
    parameter-server: `ParameterServerStrategy` from `TF_CONFIG`, on its chief
    (`parameter_server.make_strategy`).

    One instance per kind and process, reused by later runs (the tuner's):
    every new MirroredStrategy starts its collective group and instance keys
    from the same numbers, so a second one would collide with the first.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise ConfigError(f"invalid --strategy: must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "parameter-server" and name in _strategies:
        _same_cluster()
    if name not in _strategies:
        if name == "parameter-server":
            from tf_sharpcf.distribute import cluster, parameter_server
            _strategies[name] = parameter_server.make_strategy()
            _strategies[_CLUSTER] = cluster.cluster_config()["cluster"]
        elif name == "mirrored":
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            _strategies[name] = tf.distribute.MirroredStrategy([d.name for d in devices])
        else:
            _strategies[name] = tf.distribute.MultiWorkerMirroredStrategy()
    return _strategies[name]


_CLUSTER = "parameter-server cluster"     # _strategies' note of the cluster the chief connected to


def _same_cluster() -> None:
    """ConfigError unless TF_CONFIG still names the cluster this process's
    parameter-server strategy connected to: TensorFlow connects a process to
    one cluster, and a reused strategy would train on the old one. Without
    TF_CONFIG (a later run in the same process, whose cluster is this one)
    there is nothing to compare."""
    from tf_sharpcf.distribute import cluster
    if not os.environ.get("TF_CONFIG"):
        return
    now, then = cluster.cluster_config()["cluster"], _strategies[_CLUSTER]
    if now != then:
        raise ConfigError(f"TF_CONFIG names the cluster {json.dumps(now)}, but this process's chief is "
                          f"connected to {json.dumps(then)} (TensorFlow connects a process to one cluster): "
                          "run the other cluster's chief in a new process")


def is_mirrored(strategy: tf.distribute.Strategy) -> bool:
    """True for MirroredStrategy and MultiWorkerMirroredStrategy, even with one
    replica: their cross-replica steps (the optimizer's all-reduce, this
    module's gathers) are merge calls, which cannot sit inside the train
    step's own loop over a chunk of batches."""
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
