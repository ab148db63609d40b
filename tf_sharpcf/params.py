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


class Part:
    """What every registered part shares: its `params` and their TrainConfig
    `fields` (a base of `methods.Method`, `losses.Loss`, `samplers.Sampler`)."""

    params: Tuple[Param, ...] = ()

    @property
    def fields(self) -> Tuple[str, ...]:
        return tuple(p.field for p in self.params)


class Parts:
    """A registry of named parts that own `Param`s (`losses.py`'s losses,
    `samplers.py`'s samplers): one definition of registering, looking up and
    the fields each owns. It is also a live view of the registered names
    (argparse `choices`, membership tests). A part has `name`, `params` and
    `build`."""

    def __init__(self, kind: str):
        self.kind, self._parts = kind, {}

    def register(self, part):
        """Adds `part` (a new name, or replaces one of the same name)."""
        self._parts[part.name] = part
        return part

    def unregister(self, name: str) -> None:
        self._parts.pop(name, None)

    def get(self, name: str):
        """The part called `name`; KeyError if none is."""
        return self._parts[name]

    def names(self) -> Tuple[str, ...]:
        return tuple(self._parts)

    def all(self) -> tuple:
        return tuple(self._parts.values())

    def all_params(self) -> Tuple[Param, ...]:
        return tuple(p for part in self._parts.values() for p in part.params)

    def fields(self) -> Tuple[str, ...]:
        """Every registered part's own TrainConfig fields, each once."""
        return tuple(dict.fromkeys(p.field for p in self.all_params()))

    def unused_fields(self, name: str) -> Tuple[str, ...]:
        """The fields of the other parts: those a run of part `name` never reads."""
        own = {p.field for p in self._parts[name].params} if name in self._parts else set()
        return tuple(f for f in self.fields() if f not in own)

    def build(self, name: str, *args):
        """`build(*args)` of the part called `name`; ValueError if none is."""
        if name not in self._parts:
            raise ValueError(f"unknown {self.kind} {name!r}")
        return self._parts[name].build(*args)

    def __contains__(self, name) -> bool:
        return name in self._parts

    def __iter__(self):
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def __repr__(self) -> str:
        return repr(tuple(self._parts))
