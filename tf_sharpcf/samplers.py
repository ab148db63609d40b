"""The negative-sampler registry: how each step's K negatives are drawn, declared once.

A `Sampler` names the class that draws the candidates in the input pipeline
(`data/negatives.py`), how many candidates per negative it draws (`pool`),
and its hyper-parameters (`params.Param`). `fit --sampler`, the tuner and
the pipeline read it; registering a `Sampler` is all a new one needs.

* `uniform`: each negative uniform over the items the user has not
  interacted with in train (the paper's, and the default).
* `popularity`: drawn with probability ∝ (training count)^β among the same
  items (word2vec's unigram^0.75 is β = 0.75; β = 0 is uniform).
* `dns`: dynamic negative sampling (Zhang et al. 2013; the APR authors'
  `--dns`): M uniform candidates per negative, of which the step keeps the
  one the model scores highest (`objectives/hard_negatives.py`).
* `shared`: one pool of K uniform negatives per batch, scored by every row
  of it (one [B, d] x [d, K] matmul, `objectives/items.SharedItems`): K in
  the hundreds or thousands at the cost of a few per-row negatives. The
  pool is the first K of ceil(K / B) uniform draws per row, each a
  non-positive of the row it was drawn for; a row's own positive in the pool
  is masked, its other training items are not (rare at K ≪ items). Under R
  replicas each scores its own pool of up to K.

TensorFlow-free: `build` imports the samplers when called.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

from tf_sharpcf.params import Param, Part, Parts

DEFAULT = "uniform"


@dataclasses.dataclass(frozen=True)
class Sampler(Part):
    """name: the `--sampler` value. build: (data, train_config, kernel) -> a
    `data.negatives.NegativeSampler`. pool: train_config -> candidates drawn
    per negative (M; 1: the draws are the negatives). params: its own
    hyper-parameters. shared: the batch's rows share one pool of K negatives
    (the pipeline draws ceil(K / B) per row; the step pools them)."""

    name: str
    label: str
    build: Callable
    pool: Callable = lambda train_config: 1
    params: Tuple[Param, ...] = ()
    doc: str = ""
    shared: bool = False


PARTS = Parts("sampler")     # the registered samplers; also a live view of their names
register, unregister, get, names = PARTS.register, PARTS.unregister, PARTS.get, PARTS.names
all_samplers, all_params, sampler_fields, unused_fields = PARTS.all, PARTS.all_params, PARTS.fields, PARTS.unused_fields


def pool(train_config) -> int:
    """M: candidates drawn per negative by the run's sampler."""
    return int(get(train_config.sampler).pool(train_config))


def draws(train_config) -> int:
    """Negatives the input pipeline draws per row: K·M, or ceil(K / B) for a shared pool."""
    t = train_config
    if get(t.sampler).shared:
        return -(-int(t.negatives) // int(t.batch_size))
    return int(t.negatives) * pool(t)


def shared(train_config) -> int:
    """The pool size K when the batch's rows share their negatives, else 0."""
    return int(train_config.negatives) if get(train_config.sampler).shared else 0


def make_sampler(data, train_config, kernel=None):
    """The input pipeline's sampler of `train_config.sampler` over `data`'s
    training positives. kernel: as `data.negatives.NegativeSampler`'s."""
    return PARTS.build(train_config.sampler, data, train_config, kernel)


# ---------------------------------------------------------------------------
# The samplers


def _uniform(data, t, kernel=None):
    from tf_sharpcf.data.negatives import NegativeSampler
    return NegativeSampler(data, kernel=kernel)


def _popularity(data, t, kernel=None):
    from tf_sharpcf.data.negatives import PopularitySampler
    return PopularitySampler(data, t.beta, kernel=kernel)


register(Sampler("uniform", "uniform", _uniform, doc="uniform over the user's non-training items"))
register(Sampler("popularity", "popularity", _popularity, params=(
    Param("beta", "beta", float, 0, "popularity sampler: exponent β of the training count", "beta",
          None, "the popularity sampler's exponent β"),),
    doc="∝ (training count)^β over the user's non-training items"))
register(Sampler("dns", "DNS", _uniform, pool=lambda t: t.candidates, params=(
    Param("candidates", "candidates", int, 1, "dns sampler: M uniform candidates per negative, the "
          "highest-scored kept", "M", None, "the dns sampler's candidates per negative M"),),
    doc="the highest-scored of M uniform candidates per negative, chosen in the step"))
register(Sampler("shared", "shared pool", _uniform, shared=True,
                 doc="one pool of K uniform negatives per batch, scored by every row (one matmul)"))
