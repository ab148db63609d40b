"""1-D loss landscapes of a trained model (Li et al. 2018, the paper's Fig. 3).

The training BPR loss is measured at Θ + t·d for a grid of t, with d a random
direction normalised filter-wise: for an embedding table every row is a
filter, so row r of d is rescaled to ‖Θ_r‖. Models of different scale then
move by the same relative amount, and their curves can be compared.

Because a score is bilinear in the user and item rows, moving along d gives,
for a triple (u, i, j) with x = ŷ_ui − ŷ_uj,

  x(t) = (p_u + t·δ_u)·(q_i + t·δ_i) − (p_u + t·δ_u)·(q_j + t·δ_j) = a + b·t + c·t²
  a = p_u·(q_i − q_j),  b = δ_u·(q_i − q_j) + p_u·(δ_i − δ_j),  c = δ_u·(δ_i − δ_j)

so a, b, c are computed once per triple and every t costs one softplus.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.input_pipeline import NegativeSampler

Direction = Tuple[np.ndarray, np.ndarray]


def gaussian_direction(num_users: int, num_items: int, dim: int, seed: int) -> Direction:
    """([num_users, dim], [num_items, dim]) float64 draws from N(0, 1).

    The user and item tables have their own streams, so the same seed gives
    the same direction to every model of the same shapes.
    """
    users = np.random.default_rng([seed, 0]).standard_normal((num_users, dim))
    items = np.random.default_rng([seed, 1]).standard_normal((num_items, dim))
    return users, items


def filter_normalize(direction: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row r of `direction` rescaled to ‖weights_r‖ (Li et al.'s filter normalisation).

    direction, weights: [n, dim] -> [n, dim] float64. A zero weight row gives a
    zero direction row.
    """
    direction = np.asarray(direction, np.float64)
    norms = np.linalg.norm(np.asarray(weights, np.float64), axis=1, keepdims=True)
    d_norms = np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * (norms / np.where(d_norms > 0, d_norms, 1.0))


def random_direction(user_emb: np.ndarray, item_emb: np.ndarray, seed: int) -> Direction:
    """A seeded N(0, 1) direction, filter-normalised to this model's rows.

    user_emb: [num_users, dim], item_emb: [num_items, dim] ->
    (δ_users, δ_items) of the same shapes, float64, ‖δ_r‖ = ‖Θ_r‖ per row.
    """
    du, di = gaussian_direction(user_emb.shape[0], item_emb.shape[0], user_emb.shape[1], seed)
    return filter_normalize(du, user_emb), filter_normalize(di, item_emb)


def loss_along(user_emb: np.ndarray, item_emb: np.ndarray, direction: Direction,
               users: np.ndarray, pos: np.ndarray, neg: np.ndarray, ts: Sequence[float],
               batch_size: int = 16384) -> np.ndarray:
    """BPR loss mean(softplus(−x(t))) over the triples at Θ + t·d, for each t.

    user_emb [U, dim], item_emb [I, dim]; direction = (δ_users, δ_items) of the
    same shapes; users, pos, neg: [n] int triples; ts: [T]. Returns [T] float64.
    Memory is O(batch_size · (dim + T)).
    """
    p, q = np.asarray(user_emb, np.float64), np.asarray(item_emb, np.float64)
    du, di = (np.asarray(d, np.float64) for d in direction)
    ts = np.asarray(ts, np.float64)
    total = np.zeros(ts.size)
    n = len(users)
    for lo in range(0, n, batch_size):
        u, i, j = users[lo:lo + batch_size], pos[lo:lo + batch_size], neg[lo:lo + batch_size]
        pu, dpu = p[u], du[u]
        dq, ddq = q[i] - q[j], di[i] - di[j]
        a = np.einsum("bd,bd->b", pu, dq)
        b = np.einsum("bd,bd->b", dpu, dq) + np.einsum("bd,bd->b", pu, ddq)
        c = np.einsum("bd,bd->b", dpu, ddq)
        x = a[:, None] + b[:, None] * ts + c[:, None] * ts ** 2        # [b, T]
        total += np.logaddexp(0.0, -x).sum(0)                          # softplus(-x) = -ln σ(x)
    return total / n


def loss_landscape(user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, pos: np.ndarray,
                   neg: np.ndarray, ts: Sequence[float], seed: int, batch_size: int = 16384) -> np.ndarray:
    """[T] BPR loss on the triples at Θ + t·d, d = `random_direction(..., seed)`."""
    direction = random_direction(user_emb, item_emb, seed)
    return loss_along(user_emb, item_emb, direction, users, pos, neg, ts, batch_size)


def flatness(ts: Sequence[float], losses: Sequence[float], at: Sequence[float] = (0.5, 1.0)) -> Dict[float, float]:
    """{s: (L(s) + L(−s))/2 − L(0)} for each s in `at`: the mean rise of the loss
    a step s away from the trained model (larger = sharper).

    ts: [T] increasing grid covering [−max(at), max(at)]; L is linearly
    interpolated between grid points.
    """
    ts, losses = np.asarray(ts, np.float64), np.asarray(losses, np.float64)
    if ts[0] > -max(at) or ts[-1] < max(at):
        raise ValueError(f"the grid [{ts[0]}, {ts[-1]}] does not cover ±{max(at)}")
    base = np.interp(0.0, ts, losses)
    return {float(s): float((np.interp(s, ts, losses) + np.interp(-s, ts, losses)) / 2 - base) for s in at}


def sample_triples(data: Interactions, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n training (u, i) pairs without replacement, each with one uniform negative j.

    Fixed by (data, n, seed): the same triples for every model of a dataset.
    Returns three [n] int32 arrays (n is capped at the number of training pairs).
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(data.num_train, size=min(n, data.num_train), replace=False))
    users, pos = data.train_users[rows], data.train_items[rows]
    neg = NegativeSampler(data)(tf.constant(users, tf.int32), tf.constant([seed, 1], tf.int64))
    return users, pos, neg.numpy()[:, 0].astype(np.int32)
