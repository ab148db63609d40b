"""Hyper-parameter search with keras-tuner, scored on a validation split.

keras-tuner's Oracle (Bayesian optimisation, random search or Hyperband)
proposes hyper-parameters; `Tuner.run_trial` turns them into a `Config` and
calls `train.train_and_evaluate` on `split_validation(data)`: it trains on the
rest of each user's training interactions and scores Recall@20 (the objective,
maximised) and NDCG@20 on the held-out part. No trial sees the test set; only
the final retrain of the best configuration, on the full training data, is
evaluated on it.

Shared warm start: epochs [0, E_start) of an APR or SharpCF trial are
trained once per key and restored by every trial (`warm_starts.py` says what
the key holds and how SharpCF's table is re-slotted), so a trial computes
exactly what `fit` computes from scratch, minus the warm-up.

Files:

  <directory>/warmup/<key>/       meta.json, checkpoint/, trajectory.npy (SharpCF)
  <directory>/<project>/
    oracle.json, tuner0.json, trial_<id>/trial.json    keras-tuner's own records
    trial_<id>/                   config.json, history.csv, metrics.json,
                                  trial_summary.json (the run on the split)
    search.json                   the search's settings (checked on a re-run)
    trials.csv, trials.md         one row per trial
    best_hyperparameters.json     a Config dict for `fit --config`
    summary.json                  best trial, timings, warm-start saving, final metrics
    final/                        the best configuration retrained on all training data
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf
from keras_tuner import Objective
from keras_tuner import errors as kt_errors
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.hyperparameters import HyperParameters
from keras_tuner.oracles import BayesianOptimizationOracle, HyperbandOracle, RandomSearchOracle

from tf_sharpcf import checkpointing, run_dir, train
from tf_sharpcf.config import Config
from tf_sharpcf.datasets import Interactions, split_validation
from tf_sharpcf.errors import ConfigError, TfSharpCFError, TrainingError
from tf_sharpcf.atomic import atomic_write_text
from tf_sharpcf.search_space import ALGORITHMS, PARAMETERS, Space
from tf_sharpcf.warm_starts import MIN_RECORDED_WINDOW, WarmStarts, data_fingerprint  # noqa: F401
from tf_sharpcf.warm_starts import warm_starts as _warm_starts

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
        """W: epochs of scores a SharpCF warm-up keeps (>= every E searched)."""
        w = self.space.get("window", Space.fixed(self.base.train.window))
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


def make_oracle(settings: SearchSettings):
    """The keras-tuner Oracle for `settings`; it proposes every trial."""
    hp = HyperParameters()
    for name, space in settings.tuned.items():
        PARAMETERS[name].declare(hp, space)
    objective = Objective(OBJECTIVE, direction="max")
    # keras-tuner treats seed 0 as "no seed"; the training seed + 1 is never 0.
    seed = settings.base.train.seed + 1
    common = dict(objective=objective, hyperparameters=hp, seed=seed, allow_new_entries=False,
                  tune_new_entries=False)
    if settings.algorithm == "bayesian":
        # keras-tuner's default, 3 random trials per dimension, would leave a
        # 12-trial search with no Bayesian step at all: cap it at half the trials.
        initial = settings.initial_points or max(2, min(3 * len(hp.space), settings.max_trials // 2))
        return BayesianOptimizationOracle(max_trials=settings.max_trials, num_initial_points=initial, **common)
    if settings.algorithm == "random":
        return RandomSearchOracle(max_trials=settings.max_trials, **common)
    t = settings.base.train
    oracle = HyperbandOracle(max_epochs=t.epochs - settings.warm_start_epochs,
                             factor=settings.hyperband_factor, **common)
    oracle.max_trials = settings.max_trials
    return oracle


# ---------------------------------------------------------------------------
# The tuner


class Tuner(BaseTuner):
    """keras-tuner worker: each trial is one `train_and_evaluate` on the split.

    keras-tuner's stock `Tuner` only accepts Keras 3 models, and a trial here
    is a whole training run rather than one `model.fit`, so this drives the
    search from `BaseTuner`: the Oracle proposes, the project directory
    records, and `run_trial` trains.
    """

    def __init__(self, settings: SearchSettings, data: Interactions, directory: Path, project_name: str,
                 verbose: int = 1):
        self.settings, self.data, self.verbose = settings, data, verbose
        self.warm_starts = WarmStarts(Path(directory) / "warmup", data, settings.recorded_window)
        super().__init__(oracle=make_oracle(settings), directory=str(directory), project_name=project_name)

    def run_trial(self, trial) -> Dict[str, float]:
        """Trains the trial's Config on the split; -> its validation metrics.

        A trial cut short by a killed process (keras-tuner runs it again after
        a reload) continues from its own checkpoints/last/ when it has one.
        """
        config = self.settings.trial_config(trial.hyperparameters.values)
        folder = Path(self.get_trial_dir(trial.trial_id))
        tf.keras.backend.clear_session()
        start = time.perf_counter()
        scratch = folder / "warm_start"
        resume = checkpointing.find(folder / run_dir.LAST) is not None
        if resume:
            init, warm = None, self.warm_starts.info(config)
        else:
            init, warm = self.warm_starts.checkpoint(config, scratch)
        try:
            begin = (train.Start.resuming() if resume else
                     train.Start.branch(init, warm["epochs"]) if init else train.Start())
            metrics = train.train_and_evaluate(config, folder, data=self.data, verbose=0, start=begin)
        except TrainingError as e:             # a non-finite loss: a failed trial, the search goes on
            raise kt_errors.FailedTrialError(f"trial {trial.trial_id}: {e}") from e
        except Exception as e:
            # keras-tuner would record anything else as a failed trial and go
            # on; a bug or bad data must stop the search (`search` unwraps it).
            raise kt_errors.FatalError(str(e)) from e
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        seconds = time.perf_counter() - start
        # The split's checkpoints and embeddings are not needed once scored.
        shutil.rmtree(folder / run_dir.CHECKPOINTS, ignore_errors=True)
        for name in run_dir.EMBEDDINGS:
            (folder / name).unlink(missing_ok=True)
        best = metrics["best"]
        summary = {
            "trial": trial.trial_id,
            "hyperparameters": {n: getattr(config.train, PARAMETERS[n].field) for n in self.settings.space},
            OBJECTIVE: best[f"recall@{OBJECTIVE_K}"], SECONDARY: best[f"ndcg@{OBJECTIVE_K}"],
            "best_epoch": best["epoch"], "epochs": config.train.epochs,
            "trained_epochs": config.train.epochs - warm["epochs"],
            "seconds": seconds, "resumed": resume,
            "warm_start": {**warm, "trained_seconds": 0.0 if warm["reused"] else warm["seconds"]},
        }
        atomic_write_text(folder / "trial_summary.json", json.dumps(summary, indent=2))
        if self.verbose:
            print(f"trial {trial.trial_id}: {_describe(summary['hyperparameters'])} -> "
                  f"{OBJECTIVE} {summary[OBJECTIVE]:.4f}, {SECONDARY} {summary[SECONDARY]:.4f} "
                  f"({seconds:.1f} s{', warm start reused' if warm['reused'] else ''})", file=sys.stderr)
        return {OBJECTIVE: summary[OBJECTIVE], SECONDARY: summary[SECONDARY]}

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        write_tables(self)

    def trial_summaries(self) -> List[Dict[str, Any]]:
        """One dict per trial in id order: keras-tuner's status + trial_summary.json."""
        rows = []
        for trial_id in sorted(self.oracle.trials, key=int):
            trial = self.oracle.trials[trial_id]
            path = Path(self.project_dir) / f"trial_{trial_id}" / "trial_summary.json"
            if path.exists():
                summary = json.loads(path.read_text())
            else:
                config = self.settings.trial_config(trial.hyperparameters.values)
                summary = {"trial": trial_id, "hyperparameters": {
                    n: getattr(config.train, PARAMETERS[n].field) for n in self.settings.space}}
            rows.append({**summary, "status": str(trial.status)})
        return rows


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{n}={_fmt(v)}" for n, v in values.items())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------
# Reports


def timings(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    """Search seconds and what the shared warm start saved.

    A trial that reused a warm-up would otherwise have trained it: it saved
    that warm-up's measured seconds (its epochs and its XLA compile).
    """
    done = [r for r in rows if "seconds" in r]
    spent = sum(r["seconds"] for r in done)
    reused = [r for r in done if r["warm_start"]["reused"]]
    avoided = sum(r["warm_start"]["seconds"] for r in reused)
    return {
        "trials_seconds": spent,
        "warmups_trained": sum(1 for r in done if r["warm_start"]["key"] and not r["warm_start"]["reused"]),
        "warmup_seconds_trained": sum(r["warm_start"]["trained_seconds"] for r in done),
        "trials_reusing_a_warmup": len(reused),
        "warmup_epochs_avoided": sum(r["warm_start"]["epochs"] for r in reused),
        "warmup_seconds_avoided": avoided,
        "seconds_without_shared_warm_start": spent + avoided,
    }


TABLE_METRICS = (OBJECTIVE, SECONDARY, "best_epoch", "epochs", "trained_epochs", "seconds")


def write_tables(tuner: Tuner) -> List[Dict[str, Any]]:
    """trials.csv and trials.md in the project directory; -> the rows."""
    project = Path(tuner.project_dir)
    rows = tuner.trial_summaries()
    names = list(tuner.settings.space)
    columns = ["trial", "status", *names, *TABLE_METRICS, "warm_start"]
    best = tuner.oracle.get_best_trials(1)
    best_id = best[0].trial_id if best and str(best[0].status) == "COMPLETED" else None

    def cells(r):
        warm = r.get("warm_start") or {}
        status = "reused" if warm.get("reused") else ("trained" if warm.get("key") else "")
        return {"trial": r["trial"], "status": r["status"],
                **{n: r["hyperparameters"].get(n, "") for n in names},
                **{m: r.get(m, "") for m in TABLE_METRICS}, "warm_start": status}

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in cells(r).items()})
    atomic_write_text(project / "trials.csv", buf.getvalue())

    s = tuner.settings
    lines = [f"# {s.method} on {s.base.data.dataset}: {s.algorithm} search, {len(rows)} trial(s)", "",
             f"Objective: {OBJECTIVE} on a validation split ({s.val_fraction:g} of each user's training "
             f"interactions, seed {s.base.train.seed}); the test set is not used.", "",
             "Search space: " + "; ".join(f"{n} {sp.describe()}" for n, sp in s.space.items()) + ".",
             f"Epochs: {s.base.train.epochs} (the first {s.warm_start_epochs} shared as a warm start)"
             if s.warm_start_epochs else f"Epochs: {s.base.train.epochs}", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        c = cells(r)
        text = [_md(c[k], k) for k in columns]
        if r["trial"] == best_id:
            text = [f"**{t}**" if t else t for t in text]
        lines.append("| " + " | ".join(text) + " |")
    t = timings(rows)
    lines += ["", f"Trials: {t['trials_seconds']:.0f} s in all; {t['warmups_trained']} warm-up(s) trained "
                  f"({t['warmup_seconds_trained']:.0f} s); {t['trials_reusing_a_warmup']} trial(s) reused one, "
                  f"avoiding {t['warmup_epochs_avoided']} warm-up epochs ≈ {t['warmup_seconds_avoided']:.0f} s "
                  f"(without sharing: ≈ {t['seconds_without_shared_warm_start']:.0f} s)."]
    atomic_write_text(project / "trials.md", "\n".join(lines) + "\n")
    return rows


def _md(value, column: str) -> str:
    if value == "" or value is None:
        return ""
    if column in (OBJECTIVE, SECONDARY):
        return f"{value:.4f}"
    if column == "seconds":
        return f"{value:.1f}"
    return _fmt(value)


# ---------------------------------------------------------------------------
# The search


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


def search(settings: SearchSettings, directory: Path, project_name: str, data: Optional[Interactions] = None,
           overwrite: bool = False, final: bool = True, verbose: int = 1) -> Dict[str, Any]:
    """Runs (or continues) the search and writes its reports; -> summary.json's contents.

    `data` is the full dataset (train and test); trials only see
    `split_validation(data, settings.val_fraction, seed)`, and only the final
    retrain (`final=True`) sees the test part.
    """
    settings.validate()
    directory = Path(directory)
    check_project(settings, directory, project_name, overwrite)
    project = project_dir(directory, project_name)
    if overwrite and project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True, exist_ok=True)
    atomic_write_text(project / "search.json", json.dumps(settings.to_dict(), indent=2))

    data = data if data is not None else train.load_data(settings.base)
    validation = split_validation(data, settings.val_fraction, seed=settings.base.train.seed)
    if verbose:
        print(f"search on {validation.describe()}", file=sys.stderr)
    tuner = Tuner(settings, validation, directory, project_name, verbose=verbose)
    tuner.oracle.verbose = verbose
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # The Gaussian process warns when the objectives seen so far are
            # (nearly) equal, e.g. while λ's term has not switched on yet.
            warnings.filterwarnings("ignore", module="sklearn.gaussian_process")
            tuner.search()
    except kt_errors.FatalError as e:
        raise (e.__cause__ or e) from None
    except RuntimeError as e:
        if "consecutive failures" not in str(e):
            raise
        write_tables(tuner)
        raise TfSharpCFError(f"search stopped: {e}".splitlines()[0]) from None
    run_seconds = time.perf_counter() - start
    rows = write_tables(tuner)

    best = tuner.oracle.get_best_trials(1)
    if not best or str(best[0].status) != "COMPLETED":
        raise TfSharpCFError(f"search finished without a completed trial; see {project}/trials.md")
    best_trial = best[0]
    best_config = settings.trial_config(best_trial.hyperparameters.values)
    atomic_write_text(project / "best_hyperparameters.json", best_config.to_json())
    best_row = next(r for r in rows if r["trial"] == best_trial.trial_id)

    summary = {
        "method": settings.method, "dataset": settings.base.data.dataset, "algorithm": settings.algorithm,
        "trials": len(rows), "completed": sum(1 for r in rows if r["status"] == "COMPLETED"),
        "best_trial": best_trial.trial_id, "best_hyperparameters": best_row["hyperparameters"],
        "validation": {OBJECTIVE: best_row[OBJECTIVE], SECONDARY: best_row[SECONDARY],
                       "epoch": best_row["best_epoch"]},
        "seconds_this_run": run_seconds, **timings(rows), "final": None,
    }
    if final:
        summary["final"] = retrain(best_config, project / "final", data, verbose)
        previous = project / "summary.json"
        if summary["final"]["reused"] and previous.exists():
            # keep the time the retrain took when it ran
            summary["final"]["seconds"] = (json.loads(previous.read_text()).get("final") or {}).get("seconds")
    atomic_write_text(project / "summary.json", json.dumps(summary, indent=2))
    return summary


def retrain(config: Config, folder: Path, data: Interactions, verbose: int = 1) -> Dict[str, Any]:
    """Trains `config` on all training data and evaluates it on test, in `folder`.

    A finished run of the same Config there is reused; an unfinished one
    continues from its checkpoints/last/.
    """
    same = (folder / run_dir.CONFIG).exists() and \
        Config.from_stored(json.loads((folder / run_dir.CONFIG).read_text())) == config
    if same and (folder / run_dir.METRICS).exists():
        metrics = json.loads((folder / run_dir.METRICS).read_text())
        return {"test": {"best": metrics["best"], "final": metrics["final"]}, "seconds": None, "reused": True}
    if folder.exists() and not same:
        shutil.rmtree(folder)
    tf.keras.backend.clear_session()
    start = time.perf_counter()
    metrics = train.train_and_evaluate(config, folder, data=data, verbose=0, start=train.Start.resuming(same))
    seconds = time.perf_counter() - start
    if verbose:
        print(f"final retrain ({folder}): test recall@20 {metrics['final']['recall@20']:.4f}, "
              f"ndcg@20 {metrics['final']['ndcg@20']:.4f} ({seconds:.0f} s)", file=sys.stderr)
    return {"test": {"best": metrics["best"], "final": metrics["final"]}, "seconds": seconds, "reused": False}
