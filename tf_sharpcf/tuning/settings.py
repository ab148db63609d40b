"""The search's settings (`SearchSettings`), their checks, and the project folder they live in.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional


from tf_sharpcf import methods
from tf_sharpcf.atomic import atomic_write_text
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.training.run_dir import relative_path
from tf_sharpcf.tuning.search_space import ALGORITHMS, PARAMETERS, Space
from tf_sharpcf.tuning.warm_starts import MIN_RECORDED_WINDOW
from tf_sharpcf.tuning.warm_starts import warm_starts as _warm_starts


BEST_CONFIG = "best_hyperparameters.json"
OBJECTIVE_K = 20
OBJECTIVE = f"val_recall@{OBJECTIVE_K}"
SECONDARY = f"val_ndcg@{OBJECTIVE_K}"

# ---------------------------------------------------------------------------
# Search settings


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; stored as `search.json`."""

    base: Config
    space: Dict[str, Space]
    algorithm: str = "bayesian"
    max_trials: int = 20
    initial_points: Optional[int] = None      # Bayesian: random trials first (None: see make_oracle)
    hyperband_factor: int = 3
    val_fraction: float = 0.1

    @property
    def method(self) -> str:
        return self.base.train.method

    @property
    def tuned(self) -> Dict[str, Space]:
        return {n: s for n, s in self.space.items() if s.kind != "fixed"}

    @property
    def warm_start_epochs(self) -> int:
        """E_start when trials share a warm start, else 0."""
        t = self.base.train
        return t.warmup_epochs if _warm_starts(t.method) else 0

    @property
    def recorded_window(self) -> int:
        """W: epochs of state a recording warm-up keeps (`methods.Recording`;
        SharpCF's scores), >= what every searched value of its span reads (E)."""
        recording = methods.get(self.method).recording
        if recording is None:
            return MIN_RECORDED_WINDOW
        w = self.space.get(recording.span.name, Space.fixed(recording.needs(self.base.train)))
        return max(MIN_RECORDED_WINDOW, *(int(v) for v in w.values))

    def trial_config(self, values: Mapping[str, Any]) -> Config:
        """The Config of a trial with keras-tuner `values` ("tuner/epochs" is
        Hyperband's budget of epochs after the warm start)."""
        train_fields = {PARAMETERS[n].field: PARAMETERS[n].kind(s.values[0])
                        for n, s in self.space.items() if s.kind == "fixed"}
        for name, value in values.items():
            if name in PARAMETERS:
                train_fields[PARAMETERS[name].field] = PARAMETERS[name].kind(value)
        if "tuner/epochs" in values:
            train_fields["epochs"] = self.warm_start_epochs + int(values["tuner/epochs"])
        ks = tuple(sorted(set(self.base.eval.ks) | {OBJECTIVE_K}))
        return self.base.replace(train=train_fields, eval={"ks": ks})

    def validate(self) -> "SearchSettings":
        self.base.validate()
        t = self.base.train
        _require(self.algorithm in ALGORITHMS, "search", f"must be one of {', '.join(ALGORITHMS)}")
        _require(isinstance(self.max_trials, int) and self.max_trials >= 1, "max-trials", "must be >= 1")
        _require(self.initial_points is None or self.initial_points >= 1, "initial-points", "must be >= 1")
        _require(isinstance(self.hyperband_factor, int) and self.hyperband_factor >= 2,
                 "hyperband-factor", "must be an integer >= 2")
        _require(0 < self.val_fraction < 1, "val-fraction", f"must be in (0, 1), got {self.val_fraction}")
        if _warm_starts(t.method):
            _require(t.epochs > t.warmup_epochs, "epochs",
                     f"must exceed --warmup-epochs ({t.warmup_epochs}) for {t.method}: "
                     "epochs after the warm-up are where its hyper-parameters act")
        if not self.tuned:
            raise ConfigError("invalid search space: every hyper-parameter is fixed, nothing to tune")
        for name, space in self.space.items():
            p = PARAMETERS[name]
            flag = "fix" if space.kind == "fixed" else f"{p.flag}-{space.kind}"
            _require(len(space.values) >= 1, flag, "needs at least one value")
            if space.kind == "range":
                lo, hi = space.values
                _require(lo < hi, flag, f"needs LO < HI, got {lo:g} {hi:g}")
                _require(p.kind is int or lo > 0, flag, f"is sampled log-uniformly: LO must be > 0, got {lo:g}")
            for v in space.values:
                _require(p.kind is float or float(v) == int(v), flag, f"needs integers, got {v:g}")
                try:
                    self.base.replace(train={p.field: p.kind(v)}).validate()
                except ConfigError as e:
                    raise ConfigError(f"invalid --{flag}: {name} = {v:g}: {e}") from None
        return self

    def to_dict(self) -> Dict[str, Any]:
        return {"base": self.base.to_dict(), "space": {n: s.to_dict() for n, s in self.space.items()},
                "algorithm": self.algorithm, "max_trials": self.max_trials,
                "initial_points": self.initial_points, "hyperband_factor": self.hyperband_factor,
                "val_fraction": self.val_fraction}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchSettings":
        d = dict(d)
        return cls(base=Config.from_stored(d.pop("base")),
                   space={n: Space.from_dict(s) for n, s in d.pop("space").items()}, **d)

    def differences(self, other: "SearchSettings") -> List[str]:
        """Settings that differ, except max_trials (a re-run may extend a search)."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [f"{key}: {b.get(key)} -> {a.get(key)}" for key in sorted(set(a) | set(b))
                if key != "max_trials" and a.get(key) != b.get(key)]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{"base": {"train": {"lam": 1}}} -> {"base.train.lam": 1}; a space entry stays whole."""
    out = {}
    for key, value in d.items():
        if isinstance(value, Mapping) and not (prefix.startswith("space.") or not value):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def _require(ok: bool, flag: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"invalid --{flag}: {message}")


def project_dir(directory: Path, project_name: str) -> Path:
    return Path(directory) / project_name


def load_settings(directory: Path, project_name: str) -> SearchSettings:
    """The settings of an existing search (for --resume)."""
    path = project_dir(directory, project_name) / "search.json"
    if not path.exists():
        raise ConfigError(f"invalid --resume: no search in {path.parent} (search.json missing)")
    return SearchSettings.from_dict(json.loads(path.read_text()))


def check_project(settings: SearchSettings, directory: Path, project_name: str, overwrite: bool) -> None:
    """A re-run continues a search only with the same settings (max_trials may grow)."""
    project = project_dir(directory, project_name)
    if project.exists() and not project.is_dir():
        raise ConfigError(f"invalid --directory: {project} exists and is not a directory")
    path = project / "search.json"
    if overwrite or not path.exists():
        return
    stored = SearchSettings.from_dict(json.loads(path.read_text()))
    diff = settings.differences(stored)
    if diff:
        raise ConfigError(f"invalid --project-name: {project} holds a search with other settings "
                          f"({'; '.join(diff)}); pass --resume to continue it as it was, --overwrite to "
                          "start again, or another --project-name")


# ---------------------------------------------------------------------------
# The best configuration as a file that travels


def final_config(config: Config, summary: Mapping[str, Any]) -> Config:
    """The best trial's `config` as the final retrain trains it (and
    best_hyperparameters.json records it), given the trial's summary.

    The retrain is evaluated on test, so early stopping there would choose
    its epochs on test: under --patience it trains the epochs the trial
    trained on validation (to its `stopped_epoch`, or all) with patience 0.
    """
    if not config.eval.patience:
        return config
    return config.replace(train={"epochs": summary.get("stopped_epoch") or config.train.epochs},
                          eval={"patience": 0})


def write_best_config(project: Path, config: Config) -> Path:
    """Writes `config` as `project`/best_hyperparameters.json, its data_dir
    relative to the project folder (`run_dir.relative_path`: the file names no
    machine's absolute path); -> the file.

    The data_dir is only ever the one given with --data-dir (None: none was
    given), and `fit --config` does not read it back: the data directory is
    the flag, else $TF_SHARPCF_DATA, else the cache of the machine that
    trains. It stays in the file as the record of where the search found its
    data.
    """
    path = Path(project) / BEST_CONFIG
    portable = config.replace(data={"data_dir": relative_path(config.data.data_dir, path.parent)})
    atomic_write_text(path, portable.to_json())
    return path
