"""Validated recipes per dataset: the settings `fit` starts from.

A preset is the recipe of a dataset's Table 2 (its pipeline file, `source`),
every value chosen on that dataset's validation split or, where `note` says
so, carried over from another dataset. It holds the settings
of all three methods (APR's ρ, α and SharpCF's λ, E; `method` is SharpCF's,
the paper's), so `fit --dataset gowalla --method apr` trains that table's
APR run. Precedence in `fit`: the library's defaults (`Config()`) < the
preset < `--config FILE` < flags.

`--preset auto` (fit's default, or $TF_SHARPCF_PRESET's value) picks the dataset's own preset, and for a
folder of the user's own data (or a registered dataset never searched)
`FOLDER`, the recipe that did best across the datasets searched. `--preset
none` keeps the library's defaults; `--preset NAME` takes a named one.
`tests/test_presets.py` checks that each preset and its pipeline file agree.
TensorFlow-free.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Dict, Mapping

from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError

AUTO, NONE = "auto", "none"
ENV = "TF_SHARPCF_PRESET"       # fit's default --preset, when set (else auto)


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    sections: Mapping[str, Mapping[str, Any]]   # {section: {field: value}}, as Config.replace takes
    source: str                                 # the pipeline file whose runs used these settings
    note: str                                   # where the values come from

    def apply(self, config: Config) -> Config:
        return config.replace(**{s: dict(v) for s, v in self.sections.items()})


# A preset trains the paper's method (config.py's default) unless --method says otherwise.
_METHOD = Config().train.method


def _adagrad(sampling: Mapping[str, Any], l2: float, epochs: int, **method: Any) -> Dict[str, Any]:
    """The Adagrad recipe every dataset's validation chose (Gowalla first):
    MF at init N(0, 0.1²), BPR, Adagrad from a near-zero accumulator, lr 0.1,
    batch 256, 200 warm-up epochs; each dataset's own negatives (`sampling`),
    L2, epochs and method fields (`method`: λ, E, ρ, α)."""
    return {"model": {"dim": 128, "init_std": 0.1, "similarity": "dot"},
            "train": {"method": _METHOD, "loss": "bpr", **sampling, "optimizer": "adagrad",
                      "initial_accumulator": 1e-6, "batch_size": 256, "lr": 0.1, "l2": l2, "epochs": epochs,
                      "warmup_epochs": 200, **method},
            "eval": {"eval_every": 10, "ks": (10, 20)}}


# Table 2's small-batch recipe with DNS negatives, chosen on Gowalla's
# validation split (docs/reproduction.md, "Small-batch SGD", "Hard negatives"
# and "Adagrad with a decaying step"): batch 256 and L2 0.003 from the SGD
# searches, the hardest of M = 8 uniform candidates as the negative, then
# Adagrad from a near-zero accumulator (a per-row step that decays; it beat
# SGD), the protocol's length from BPR's validation curve (the 400 cap:
# 200 + 200), then SharpCF's λ, E and APR's ρ, α searched on it.
_ADAGRAD_DNS_GOWALLA = _adagrad({"sampler": "dns", "candidates": 8, "negatives": 1}, l2=0.003, epochs=400,
                                window=3, lam=0.1, eps=0.01, adv_weight=0.1)

# Yelp2018: Gowalla's Adagrad recipe with Yelp2018's own negatives (K = 4
# uniform; DNS lost on its validation split), chosen on that split
# (docs/reproduction.md, "Yelp2018 at the Adagrad recipe"): BPR 0.1063 and
# SharpCF 0.1070 against LazyAdam's 0.0991 and 0.1062; the protocol's length
# from BPR's validation curve (best at 380: 200 + 180); SharpCF's λ, E and
# APR's ρ, α from its searches at 200 + 20, which tie Gowalla's values.
_ADAGRAD_YELP2018 = _adagrad({"sampler": "uniform", "negatives": 4}, l2=0.003, epochs=380,
                             window=3, lam=0.1, eps=0.01, adv_weight=0.1)

# ml-1m: the Adagrad settings of Gowalla and Yelp2018 with ml-1m's own K = 4
# and L2 0.01, chosen on its validation split (docs/reproduction.md, "ml-1m
# at the Adagrad recipe"): BPR 0.2349, SharpCF 0.2361 and APR 0.2357 against
# LazyAdam's 0.2318, 0.2343 and 0.2306; BPR's best epoch is 130, so the
# protocol's floor, 200 + 20; SharpCF's λ, E and APR's ρ, α searched on it.
_ADAGRAD_ML1M = _adagrad({"sampler": "uniform", "negatives": 4}, l2=0.01, epochs=220,
                         window=1, lam=0.3, eps=0.1, adv_weight=0.1)

PRESETS: Dict[str, Preset] = {p.name: p for p in (
    Preset("gowalla", _ADAGRAD_DNS_GOWALLA, "pipelines/table2_gowalla_adagrad.toml",
           "every value chosen on Gowalla's validation split"),
    Preset("yelp2018", _ADAGRAD_YELP2018, "pipelines/table2_yelp2018_adagrad.toml",
           "every value chosen on Yelp2018's validation split"),
    Preset("ml-1m", _ADAGRAD_ML1M, "pipelines/table2_ml-1m_adagrad.toml",
           "every value chosen on ml-1m's validation split"),
)}

# A folder of the user's own data, or a registered dataset that was never
# searched (amazon-book): the recipe that did best across the datasets searched.
FOLDER = "gowalla"


def names() -> tuple:
    """What --preset accepts."""
    return (AUTO, NONE, *PRESETS)


def default_choice() -> str:
    """fit's --preset when none is given: $TF_SHARPCF_PRESET, else auto."""
    choice = os.environ.get(ENV) or AUTO
    if choice not in names():
        raise ConfigError(f"invalid ${ENV}: {choice!r}; choose from {', '.join(names())}")
    return choice


def resolve(choice: str, dataset: str) -> Preset | None:
    """The preset `choice` (auto, none or a name) means for `dataset`; None: the library's defaults."""
    if choice == NONE:
        return None
    if choice == AUTO:
        return PRESETS.get(dataset, PRESETS[FOLDER])
    if choice not in PRESETS:
        raise ConfigError(f"invalid --preset: {choice!r}; choose from {', '.join(names())}")
    return PRESETS[choice]


def changes(preset: Preset) -> Dict[str, Any]:
    """{field: value} of what `preset` sets that differs from the library's defaults."""
    base = Config()
    return {field: value for section, values in preset.sections.items() for field, value in values.items()
            if getattr(getattr(base, section), field) != value}


def keep_optimizer_fields_with_their_optimizer(config: Config, chosen: Mapping[str, Any]) -> Config:
    """A preset's Adagrad initial accumulator belongs to Adagrad: when a
    --config file or flag picks another optimizer (`chosen`: the train fields
    they set) without setting it, it returns to the default, so `--optimizer
    sgd` on the gowalla preset trains SGD instead of failing validation."""
    default = Config().train.initial_accumulator
    if config.train.optimizer != "adagrad" and "initial_accumulator" not in chosen:
        return config.replace(train={"initial_accumulator": default})
    return config


def warn_if_lr_unscaled(base: Config, config: Config) -> None:
    """SGD's lr applies to the batch-mean loss, so the SGD lr of a preset or
    of a `--config` file (`base`: a tuned or earlier run) was chosen for its
    batch size: at another one each positive's step scales by base batch /
    batch. Warns when a flag changed the batch and not the lr. (Adam's step,
    and Adagrad's once its accumulator has outgrown its start, as at the
    presets' 1e-6, do not scale with the gradient, so other
    optimizers are not checked.)"""
    b, t = base.train, config.train
    if t.optimizer == "sgd" == b.optimizer and t.batch_size != b.batch_size and t.lr == b.lr:
        warnings.warn(f"--batch-size {t.batch_size} with the lr {t.lr} chosen at batch {b.batch_size}: SGD's lr is "
                      f"on the batch-mean loss, so each positive's step is {b.batch_size / t.batch_size:g}x the "
                      f"validated one; --lr {t.lr * t.batch_size / b.batch_size:g} keeps it")


def base_config(choice: str, dataset: str) -> Config:
    """`Config()` with the preset for (choice, dataset) applied, and the dataset set."""
    preset = resolve(choice, dataset)
    config = Config() if preset is None else preset.apply(Config())
    return config.replace(data={"dataset": dataset})
