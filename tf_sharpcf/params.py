"""`Param`: a hyper-parameter that one registered part owns, declared once.

A training method (`methods.py`: the regulariser on top of the loss) or a
loss on the scores (`losses.py`) lists its `Param`s; `Config.validate`, the
command lines' flags and the tuner's search space all read them from there
(`all_params`). TensorFlow-free.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Param:
    """A hyper-parameter one part owns, declared once for every reader.

    field: its `TrainConfig` field. name: `fit --NAME` and `tune --NAME-range /
    --NAME-values / --fix NAME=...` (dashes for underscores in flags), and the
    name in validation messages. kind: int or float; minimum: the smallest
    valid value, or the bound it must exceed when `above` (a float must also
    be finite; `Config.validate` checks it). help: fit's help text, before
    "(default ...)"; symbol: the paper's symbol, named in messages. search:
    the tuner's default domain, ("range", (lo, hi)) or ("values", (...)),
    None to search it only when asked; search_doc: the tuner's description.
    """

    field: str
    name: str
    kind: type
    minimum: float
    help: str
    symbol: str = ""
    search: Optional[Tuple[str, tuple]] = None
    search_doc: str = ""
    above: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def accepts(self, value) -> bool:
        """value is within the bound (its kind is checked by the caller)."""
        return value > self.minimum if self.above else value >= self.minimum

    @property
    def bound(self) -> str:
        return f"{'>' if self.above else '>='} {self.minimum}"


def all_params() -> Tuple[Param, ...]:
    """Every registered method's, loss's and sampler's hyper-parameters, in that order."""
    from tf_sharpcf import losses, methods, samplers
    return (*methods.all_params(), *losses.all_params(), *samplers.all_params())
