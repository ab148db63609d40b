"""Losses on scores: pure functions of the positive scores [B] and the
negative scores [B, K] ([B] on the gathered K = 1 graph) -> a scalar.

Which `--loss` builds which is `tf_sharpcf/losses.py`'s. `ScoreLoss` carries
the function and the name its value is logged under. `cosine` turns the dot
products of the scoring path into cosine similarities.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import tensorflow as tf


def _as_matrix(neg_scores: tf.Tensor) -> tf.Tensor:
    """[B] (K = 1) -> [B, 1]; [B, K] as it is."""
    return neg_scores[:, None] if len(neg_scores.shape) == 1 else neg_scores


def bpr_loss(pos_scores: tf.Tensor, neg_scores: tf.Tensor) -> tf.Tensor:
    """Mean of -ln σ(ŷ_ui − ŷ_uj) over the batch's B·K (positive, negative) pairs (Eq. 3).

    pos_scores: [B] float32; neg_scores: [B, K] float32 (K negatives per
    positive), or [B] for K = 1 -> scalar. -ln σ(x) is computed as
    softplus(-x), the same value without overflow for large |x|.
    """
    if len(neg_scores.shape) == 1:
        return tf.reduce_mean(tf.nn.softplus(neg_scores - pos_scores))
    return tf.reduce_mean(tf.nn.softplus(neg_scores - pos_scores[:, None]))


def softmax_loss(pos_scores: tf.Tensor, neg_scores: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
    """Sampled softmax: mean over B of -ln(e^{ŷ_ui/τ} / (e^{ŷ_ui/τ} + Σ_k e^{ŷ_ujk/τ})).

    pos_scores: [B]; neg_scores: [B, K] or [B] (K = 1) -> scalar. Computed as
    logsumexp − ŷ_ui/τ, stable for any score range. Uniform negatives, no
    log-Q correction (each item is drawn with the same probability).
    """
    logits = tf.concat([pos_scores[:, None], _as_matrix(neg_scores)], 1) / temperature
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - logits[:, 0])


def hardest_loss(pos_scores: tf.Tensor, neg_scores: tf.Tensor) -> tf.Tensor:
    """BPR on the hardest negative: mean of softplus(max_k ŷ_ujk − ŷ_ui).

    pos_scores: [B]; neg_scores: [B, K] or [B] -> scalar. At K = 1 it is
    `bpr_loss`. Only the highest-scored of the K negatives gets a gradient
    (the dynamic negative sampling of Zhang et al. 2013, scored in the step).
    """
    return tf.reduce_mean(tf.nn.softplus(tf.reduce_max(_as_matrix(neg_scores), axis=1) - pos_scores))


def cosine(dots: tf.Tensor, user_sq: tf.Tensor, item_sq: tf.Tensor) -> tf.Tensor:
    """dots / (‖e_u‖ ‖e_i‖), with the squared norms given.

    dots, item_sq: [B] or [B, K]; user_sq: [B] -> the same shape as dots.
    A zero row scores 0 (the norms' product is floored at 1e-24).
    """
    u = user_sq if len(dots.shape) == 1 else user_sq[:, None]
    return dots * tf.math.rsqrt(tf.maximum(u * item_sq, 1e-24))


class ScoreLoss(NamedTuple):
    """A loss on scores and the name it is logged under (`<name>_loss`)."""
    name: str
    fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

    @property
    def log_name(self) -> str:
        return f"{self.name}_loss"

    def __call__(self, pos_scores: tf.Tensor, neg_scores: tf.Tensor) -> tf.Tensor:
        return self.fn(pos_scores, neg_scores)


BPR_LOSS = ScoreLoss("bpr", bpr_loss)
HARDEST_LOSS = ScoreLoss("hardest", hardest_loss)


def softmax(temperature: float) -> ScoreLoss:
    return ScoreLoss("softmax", functools.partial(softmax_loss, temperature=float(temperature)))
