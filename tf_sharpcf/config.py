"""Frozen settings for data, model, training and evaluation.

`Config` is what `fit` builds from its flags (or a JSON file) and what
`train.train_and_evaluate` takes; `validate()` rejects invalid settings with a
message that names the field, before anything is read or written.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from tf_sharpcf import losses as _losses, methods as _methods, params as _params, samplers as _samplers
from tf_sharpcf.errors import ConfigError

METHODS = _methods.PARTS        # the registered methods (`methods.py`), a live view
LOSSES = _losses.PARTS        # the registered losses on scores (`losses.py`)
SAMPLERS = _samplers.PARTS    # the registered negative samplers (`samplers.py`)
# ŷ_ui = e_u·e_i, or e_u·e_i / (‖e_u‖ ‖e_i‖), in training, ranking and serving
SIMILARITIES = ("dot", "cosine")
OPTIMIZERS = ("lazyadam", "adagrad", "sgd", "adam")
# tf.distribute, see distribute/strategy.py and distribute/parameter_server.py
STRATEGIES = ("default", "mirrored", "multi-worker", "parameter-server")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "gowalla"          # a registered name or a folder in LightGCN format
    data_dir: Optional[str] = None    # else $TF_SHARPCF_DATA, else the user cache
    download: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    dim: int = 128
    init_std: float = 0.1
    similarity: str = "dot"           # SIMILARITIES


# The library's defaults are the first Gowalla-validated recipe,
# pipelines/table2_gowalla.toml (its [provenance] says which search chose each
# value). `fit` starts from the dataset's preset on top of them (presets.py).
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    method: str = "sharpcf"        # the regulariser around the loss: bpr (none), apr, sharpcf
    loss: str = "bpr"              # the loss on scores (`losses.py`)
    temperature: float = 0.1       # τ of --loss softmax
    sampler: str = "uniform"       # how the K negatives are drawn (`samplers.py`)
    beta: float = 0.75             # β of --sampler popularity
    candidates: int = 8            # M of --sampler dns
    epochs: int = 400
    warmup_epochs: int = 200       # E_start: plain BPR epochs before APR/SharpCF
    window: int = 1                # E: the trajectory looks E epochs back
    lam: float = 0.1               # lambda of Eq. 17
    eps: float = 0.1               # rho of Eq. 5
    adv_weight: float = 3.0        # alpha of Eq. 6
    batch_size: int = 8192
    negatives: int = 4             # K: uniform negatives per positive, BPR averaged over them
    lr: float = 5e-3
    method_lr: float = 0.0         # lr from E_start on (every method's own epochs, BPR's too); 0: lr throughout
    optimizer: str = "lazyadam"
    initial_accumulator: float = 0.1   # --optimizer adagrad: each accumulator's start (Keras' default)
    l2: float = 1e-2
    seed: int = 0
    steps_per_execution: int = 0   # batches per call into the graph; 0: 128
    jit_compile: bool = True       # XLA: much faster CPU epochs for a compile per run (README, Benchmarks)
    checkpoint_every: int = 1      # checkpoints/last/ every N epochs and after the last (0: only then)
    strategy: str = "default"      # tf.distribute: default (one device), mirrored, multi-worker, parameter-server


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    ks: Tuple[int, ...] = (10, 20)
    eval_every: int = 10
    user_batch: int = 2048
    # stop after this many evaluations in a row with no gain of Recall@max K
    # over the best of the method's own phase (`training/early_stopping.py`); 0: off
    patience: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def validate(self) -> "Config":
        t, m, e = self.train, self.model, self.eval
        _check(t.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {t.method!r}")
        _check(t.loss in LOSSES, "loss", f"must be one of {', '.join(LOSSES)}, got {t.loss!r}")
        _check(t.sampler in SAMPLERS, "sampler", f"must be one of {', '.join(SAMPLERS)}, got {t.sampler!r}")
        _check(m.similarity in SIMILARITIES, "similarity",
               f"must be one of {', '.join(SIMILARITIES)}, got {m.similarity!r}")
        _check(t.optimizer in OPTIMIZERS, "optimizer",
               f"must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
        _check(t.strategy in STRATEGIES, "strategy",
               f"must be one of {', '.join(STRATEGIES)}, got {t.strategy!r}")
        _check(_is_int(m.dim) and m.dim >= 1, "dim", f"must be an integer >= 1, got {m.dim!r}")
        _check(_finite(m.init_std) and m.init_std > 0, "init-std", f"must be > 0, got {m.init_std!r}")
        _check(_is_int(t.epochs) and t.epochs >= 1, "epochs", f"must be an integer >= 1, got {t.epochs!r}")
        _check(_is_int(t.warmup_epochs) and t.warmup_epochs >= 0, "warmup-epochs",
               f"must be an integer >= 0, got {t.warmup_epochs!r}")
        for p in _params.all_params():      # every method's and loss's own hyper-parameters (`params.Param`)
            value, symbol = getattr(t, p.field), f"({p.symbol}) " if p.symbol else ""
            kind_ok, what = (_is_int(value), "an integer") if p.kind is int else (_finite(value), "a finite number")
            _check(kind_ok and p.accepts(value), p.name.replace("_", "-"),
                   f"{symbol}must be {what} {p.bound}, got {value!r}")
        _check(_is_int(t.batch_size) and t.batch_size >= 1, "batch-size",
               f"must be an integer >= 1, got {t.batch_size!r}")
        _check(_is_int(t.negatives) and t.negatives >= 1, "negatives",
               f"(K) must be an integer >= 1, got {t.negatives!r}")
        _check(_finite(t.lr) and t.lr > 0, "lr", f"must be a finite number > 0, got {t.lr!r}")
        _check(_finite(t.method_lr) and t.method_lr >= 0, "method-lr",
               f"must be a finite number >= 0 (0: --lr throughout), got {t.method_lr!r}")
        _check(_finite(t.initial_accumulator) and t.initial_accumulator >= 0, "initial-accumulator",
               f"must be a finite number >= 0, got {t.initial_accumulator!r}")
        _check(t.optimizer == "adagrad" or t.initial_accumulator == TrainConfig.initial_accumulator,
               "initial-accumulator", f"applies to --optimizer adagrad only, got it with {t.optimizer!r}")
        _check(_finite(t.l2) and t.l2 >= 0, "l2", f"must be a finite number >= 0, got {t.l2!r}")
        _check(_is_int(t.seed) and 0 <= t.seed < 2 ** 32, "seed",
               f"must be an integer in [0, 2**32 - 1], got {t.seed!r}")
        _check(_is_int(t.steps_per_execution) and t.steps_per_execution >= 0, "steps-per-execution",
               f"must be an integer >= 0, got {t.steps_per_execution!r}")
        _check(_is_int(t.checkpoint_every) and t.checkpoint_every >= 0, "checkpoint-every",
               f"must be an integer >= 0, got {t.checkpoint_every!r}")
        _check(len(e.ks) >= 1 and all(_is_int(k) and k >= 1 for k in e.ks), "k",
               f"every K must be an integer >= 1, got {list(e.ks)!r}")
        _check(_is_int(e.eval_every) and e.eval_every >= 1, "eval-every",
               f"must be an integer >= 1, got {e.eval_every!r}")
        _check(_is_int(e.user_batch) and e.user_batch >= 1, "eval-user-batch",
               f"must be an integer >= 1, got {e.user_batch!r}")
        _check(_is_int(e.patience) and e.patience >= 0, "patience",
               f"must be an integer >= 0 (0: no early stopping), got {e.patience!r}")
        _check(isinstance(self.data.dataset, str) and self.data.dataset.strip() != "", "dataset",
               "must name a dataset or a folder")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_stored(cls, d: Mapping[str, Any]) -> "Config":
        """A Config written by tf_sharpcf (a run's config.json, a search's base):
        every field was written, so one that is missing predates the field and
        takes the value it had then (`ADDED_FIELDS`), not today's default."""
        if isinstance(d, Mapping):
            d = {name: dict(values) if isinstance(values, Mapping) else values for name, values in d.items()}
            for section, fields in ADDED_FIELDS.items():
                if isinstance(d.get(section), dict):
                    for name, value in fields.items():
                        d[section].setdefault(name, value)
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """Builds a Config from nested dicts; unknown sections or keys are errors."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a config must be a JSON object of sections, got {_kind(d)}")
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kinds = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
        unknown = set(d) - set(sections)
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(map(str, unknown)))}")
        parts = {}
        for name, kind in kinds.items():
            raw = d.get(name, {})
            if raw is None:
                raw = {}
            if not isinstance(raw, Mapping):
                raise ConfigError(f"config section '{name}' must be an object of fields, got {_kind(raw)}")
            values = dict(raw)
            known = {f.name: f.type for f in dataclasses.fields(kind)}
            bad = set(values) - set(known)
            if bad:
                raise ConfigError(f"unknown key(s) in config section '{name}': {', '.join(sorted(map(str, bad)))}")
            for field, value in values.items():
                check = _TYPE_CHECKS[known[field]]
                if not check(value):
                    raise ConfigError(f"config field '{name}.{field}' must be {_TYPE_NAMES[known[field]]}, "
                                      f"got {_kind(value)} {value!r:.60}")
            if name == "eval" and "ks" in values:
                values["ks"] = tuple(values["ks"])
            parts[name] = kind(**values)
        return cls(**parts)

    @classmethod
    def from_file(cls, path) -> "Config":
        """Reads a JSON config file; a missing or malformed file is a ConfigError
        naming the file (and line)."""
        return _from_json_file(path, cls.from_dict)

    @staticmethod
    def sections_from_file(path) -> dict:
        """The fields a JSON config file gives, {section: {field: value}} (ks a
        tuple), checked as `from_file` checks them, without the defaults of the
        fields it leaves out; errors as `from_file`."""
        def given(d):
            Config.from_dict(d)
            sections = {name: dict(values or {}) for name, values in d.items()}
            if "ks" in sections.get("eval", {}):
                sections["eval"]["ks"] = tuple(sections["eval"]["ks"])
            return sections
        return _from_json_file(path, given)

    @classmethod
    def from_stored_file(cls, path) -> "Config":
        """`from_stored` of a JSON file (a run's config.json), errors as `from_file`."""
        return _from_json_file(path, cls.from_stored)

    def replace(self, **sections: Mapping[str, Any]) -> "Config":
        """Returns a copy with fields replaced, e.g. replace(train={"lam": 1.0})."""
        parts = {}
        for name, values in sections.items():
            parts[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **parts)


def _from_json_file(path, build):
    """build(the JSON value in `path`); any problem is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        return build(json.loads(text))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 JSON file (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: {e.msg}") from None
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None


# Fields added after configs were first written, with the value a config
# written before them meant (`Config.from_stored`).
ADDED_FIELDS = {"train": {"negatives": 1, "loss": "bpr", "sampler": "uniform", "method_lr": 0.0},
                "model": {"similarity": "dot"},
                "eval": {"patience": 0}}


def _kind(x) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), type(x).__name__)


# The field annotations (strings under `from __future__ import annotations`)
# and what a JSON value must be to fill them.
_TYPE_CHECKS = {
    "str": lambda x: isinstance(x, str),
    "Optional[str]": lambda x: x is None or isinstance(x, str),
    "bool": lambda x: isinstance(x, bool),
    "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "float": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "Tuple[int, ...]": lambda x: isinstance(x, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in x),
}
_TYPE_NAMES = {"str": "a string", "Optional[str]": "a string or null", "bool": "true or false",
               "int": "an integer", "float": "a number", "Tuple[int, ...]": "a list of integers"}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"invalid --{field}: {message}")
