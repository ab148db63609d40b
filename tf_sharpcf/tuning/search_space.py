"""The tuner's search space: which hyper-parameters exist, their default
domains, and the `--NAME-range` / `--NAME-values` / `--fix NAME=VALUE` forms.

Pure Python (no TensorFlow), so `python -m tf_sharpcf.tune --help` and flag
checking are instant; `tuner.py` declares these domains to keras-tuner.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from tf_sharpcf import losses as loss_registry, methods as method_registry, params as param_registry
from tf_sharpcf import samplers as sampler_registry
from tf_sharpcf.errors import ConfigError

if TYPE_CHECKING:
    from keras_tuner.engine.hyperparameters import HyperParameters

ALGORITHMS = ("bayesian", "random", "hyperband")


@dataclasses.dataclass(frozen=True)
class Space:
    """One hyper-parameter's domain.

    kind "range": values = (lo, hi), log-uniform for floats, uniform for ints;
    kind "values": a choice among `values`; kind "fixed": values = (v,).
    """

    kind: str
    values: Tuple[float, ...]

    @classmethod
    def range(cls, lo, hi) -> "Space":
        return cls("range", (lo, hi))

    @classmethod
    def choice(cls, *values) -> "Space":
        return cls("values", tuple(values))

    @classmethod
    def fixed(cls, value) -> "Space":
        return cls("fixed", (value,))

    def to_dict(self) -> Dict[str, Any]:
        return {self.kind: list(self.values)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Space":
        (kind, values), = d.items()
        return cls(kind, tuple(values))

    def describe(self) -> str:
        if self.kind == "range":
            return f"[{self.values[0]:g}, {self.values[1]:g}]"
        if self.kind == "values":
            return "{" + ", ".join(f"{v:g}" for v in self.values) + "}"
        return f"{self.values[0]:g} (fixed)"


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A tunable setting: its keras-tuner / table name, Config field, type,
    its default domain. The methods it applies to come from the registry
    (`methods.Method.fields`): a field some methods own is theirs, any other
    field every method's."""

    name: str
    field: str
    kind: type
    default: Optional[Space]      # None: searched only when a range or values are given
    doc: str

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    @property
    def methods(self) -> Tuple[str, ...]:
        owners = tuple(m.name for m in method_registry.all_methods() if self.field in m.fields)
        return owners or method_registry.names()

    @property
    def losses(self) -> Tuple[str, ...]:
        """The losses it applies to: its owner among the losses (`losses.Loss.fields`), else all."""
        owners = tuple(x.name for x in loss_registry.all_losses() if self.field in x.fields)
        return owners or loss_registry.names()

    @property
    def samplers(self) -> Tuple[str, ...]:
        """The samplers it applies to, likewise (`samplers.Sampler.fields`)."""
        owners = tuple(x.name for x in sampler_registry.all_samplers() if self.field in x.fields)
        return owners or sampler_registry.names()

    def declare(self, hp: HyperParameters, space: Space) -> None:
        if space.kind == "range":
            lo, hi = space.values
            if self.kind is int:
                hp.Int(self.name, int(lo), int(hi))
            else:
                hp.Float(self.name, float(lo), float(hi), sampling="log")
        elif space.kind == "values":
            hp.Choice(self.name, [self.kind(v) for v in space.values])


PARAMETERS: Dict[str, Parameter] = {p.name: p for p in (
    # each method's and loss's own, declared in its `methods.Method` or `losses.Loss` (`params.Param`)
    *[Parameter(p.name, p.field, p.kind, Space(*p.search) if p.search else None, p.search_doc)
      for p in param_registry.all_params()],
    # lr and L2 default to log grids, not continuous ranges: every (lr, L2) pair
    # needs its own warm-up, and a grid keeps that to at most 9.
    Parameter("lr", "lr", float, Space.choice(2.5e-3, 5e-3, 1e-2), "learning rate"),
    Parameter("l2", "l2", float, Space.choice(3e-3, 1e-2, 3e-2), "L2 weight on the batch embeddings"),
    # The lr after E_start: trials that differ only in it share one warm-up.
    Parameter("method_lr", "method_lr", float, None, "learning rate from E_start on (0: lr)"),
    # Part of the BPR recipe, like lr and L2 (each value its own warm-up);
    # searched only when asked, else the base config's value.
    Parameter("negatives", "negatives", int, None, "K, negatives per positive"),
    Parameter("batch_size", "batch_size", int, None, "batch size"),
    Parameter("initial_accumulator", "initial_accumulator", float, None, "Adagrad's initial accumulator"),
)}
_ALIASES = {"lam": "lambda", "adv-weight": "adv_weight", "e": "window", "k": "negatives",
            "batch-size": "batch_size"}


def parameter(name: str) -> Parameter:
    """The parameter called `name` (also accepts lam, adv-weight, E)."""
    key = _ALIASES.get(name.lower(), name.lower()).replace("-", "_")
    if key not in PARAMETERS:
        raise ConfigError(f"invalid --fix: unknown hyper-parameter {name!r} "
                          f"(one of {', '.join(PARAMETERS)})")
    return PARAMETERS[key]


def parse_fix(text: str) -> Tuple[str, Space]:
    """'lr=0.005' -> ('lr', Space.fixed(0.005))."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"invalid --fix: {text!r} is not NAME=VALUE")
    p = parameter(name.strip())
    try:
        number = p.kind(value.strip())
    except ValueError:
        raise ConfigError(f"invalid --fix: {p.name} needs {'an integer' if p.kind is int else 'a number'}, "
                          f"got {value!r}") from None
    return p.name, Space.fixed(number)


def search_space(method: str, overrides: Mapping[str, Space], loss: str = loss_registry.DEFAULT,
                 sampler: str = sampler_registry.DEFAULT) -> Dict[str, Space]:
    """The domains of the parameters of `method` on `loss` with `sampler`: the
    defaults, with `overrides`.

    A range or list of values for a parameter the method, the loss or the
    sampler does not use is an error; a fixed value for one is allowed (it
    only sets the Config field).
    """
    space = {}
    for name, p in PARAMETERS.items():
        given = overrides.get(name)
        part = next(((kind, owners, value) for kind, owners, value in (
            ("loss", p.losses, loss), ("sampler", p.samplers, sampler)) if value not in owners), None)
        if part is not None:
            kind, owners, value = part
            if given is not None and given.kind != "fixed":
                raise ConfigError(f"invalid --{p.flag}-{'range' if given.kind == 'range' else 'values'}: "
                                  f"{p.name} applies to --{kind} {', '.join(owners)} only, not {value}")
            if given is not None:
                space[name] = given
            continue
        if method in p.methods:
            if given or p.default:
                space[name] = given or p.default
        elif given is not None and given.kind != "fixed":
            raise ConfigError(f"invalid --{p.flag}-{'range' if given.kind == 'range' else 'values'}: "
                              f"{p.name} applies to {', '.join(p.methods)} only, not {method}")
        elif given is not None:
            space[name] = given
    return space
