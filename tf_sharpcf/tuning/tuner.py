"""Hyper-parameter search with keras-tuner, scored on a validation split.

keras-tuner's Oracle (Bayesian optimisation, random search or Hyperband)
proposes hyper-parameters; `Tuner.run_trial` turns them into a `Config` and
calls `train.train_and_evaluate` on `split_validation(data)`: it trains on the
rest of each user's training interactions and scores Recall@20 (the objective,
maximised) and NDCG@20 on the held-out part. No trial sees the test set; only
the final retrain of the best configuration, on the full training data, is
evaluated on it. Under --patience a trial stops early on its validation
metric (`training/early_stopping.py`), and the retrain trains the epochs the
best trial trained, without early stopping (`settings.final_config`).

Shared warm start: epochs [0, E_start) of an APR or SharpCF trial are
trained once per key and restored by every trial (`warm_starts.py` says what
the key holds and how SharpCF's table is re-slotted), so a trial computes
exactly what `fit` computes from scratch, minus the warm-up.

Files:

  <directory>/warmup/<key>/       meta.json, checkpoint/ (SharpCF's: with its recorded table)
  <directory>/<project>/
    oracle.json, tuner0.json, trial_<id>/trial.json    keras-tuner's own records
    trial_<id>/                   config.json, history.csv, metrics.json,
                                  trial_summary.json (the run on the split)
    search.json                   the search's settings (checked on a re-run)
    trials.csv, trials.md         one row per trial
    best_hyperparameters.json     a Config dict for `fit --config` (data_dir relative to it)
    summary.json                  best trial, timings, warm-start saving, final metrics
    final/                        the best configuration retrained on all training data
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import tensorflow as tf
from keras_tuner import Objective
from keras_tuner import errors as kt_errors
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.hyperparameters import HyperParameters
from keras_tuner.oracles import BayesianOptimizationOracle, HyperbandOracle, RandomSearchOracle

from tf_sharpcf.training import checkpointing, run_dir, signals, train
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions, split_validation
from tf_sharpcf.errors import ConfigError, Stopped, TfSharpCFError, TrainingError
from tf_sharpcf.atomic import atomic_write_text
from tf_sharpcf.tuning.search_space import PARAMETERS
from tf_sharpcf.tuning.warm_starts import WarmStarts
from tf_sharpcf.tuning.settings import (OBJECTIVE, OBJECTIVE_K, SECONDARY, SearchSettings, check_project,
                                        final_config, project_dir, write_best_config)
from tf_sharpcf.tuning.reports import describe, timings, write_tables


# How a search stopped by SIGTERM or SIGINT (`signals`) goes on.
CONTINUE = "finished trials are kept: the same tune command (or tune --resume) continues the search"


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
        try:
            if resume:
                init, warm = None, self.warm_starts.info(config, train_missing=False)
            else:
                init, warm = self.warm_starts.checkpoint(config, scratch)
            begin = (train.Start.resuming() if resume else
                     train.Start.branch(init, warm["epochs"]) if init else train.Start())
            metrics = train.train_and_evaluate(config, folder, data=self.data, verbose=0, start=begin)
        except TrainingError as e:             # a non-finite loss: a failed trial, the search goes on
            if signals.requested() is not None:    # e.g. a full disk while saving on SIGTERM: stop, retry later
                raise kt_errors.FatalError(str(e)) from e
            raise kt_errors.FailedTrialError(f"trial {trial.trial_id}: {e}") from e
        except Stopped as e:
            # SIGTERM/SIGINT: the trial saved its checkpoint (a shared warm-up is
            # trained again); keras-tuner runs the trial again on a re-run
            raise kt_errors.FatalError(str(e)) from Stopped(e.signum, f"in trial {trial.trial_id}: {e.where}",
                                                            CONTINUE)
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
            # after the shared warm start, up to the last epoch or an early stop (`stopped_epoch`)
            "trained_epochs": metrics["final"]["epoch"] - warm["epochs"], "stopped_epoch": metrics["stopped_epoch"],
            "seconds": seconds, "resumed": resume,
            "warm_start": {**warm, "trained_seconds": 0.0 if warm["reused"] else warm["seconds"]},
        }
        atomic_write_text(folder / "trial_summary.json", json.dumps(summary, indent=2))
        if self.verbose:
            stopped = f", stopped early at epoch {summary['stopped_epoch']}" if summary["stopped_epoch"] else ""
            print(f"trial {trial.trial_id}: {describe(summary['hyperparameters'])} -> "
                  f"{OBJECTIVE} {summary[OBJECTIVE]:.4f}, {SECONDARY} {summary[SECONDARY]:.4f} "
                  f"({seconds:.1f} s{', warm start reused' if warm['reused'] else ''}{stopped})", file=sys.stderr)
        return {OBJECTIVE: summary[OBJECTIVE], SECONDARY: summary[SECONDARY]}

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.write_tables()
        signals.stop_if_requested(f"after trial {trial.trial_id}", CONTINUE)

    def write_tables(self) -> List[Dict[str, Any]]:
        """trials.csv / trials.md of the trials so far (`reports.write_tables`); -> their rows."""
        best = self.oracle.get_best_trials(1)
        best_id = best[0].trial_id if best and str(best[0].status) == "COMPLETED" else None
        return write_tables(Path(self.project_dir), self.settings, self.trial_summaries(), best_id)

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


@signals.deferring("the search")      # SIGTERM/SIGINT: stop after the current chunk, trial or step
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
    try:
        tuner = Tuner(settings, validation, directory, project_name, verbose=verbose)
    except RuntimeError as e:      # keras-tuner's reload of a project whose files disagree
        if not str(e).startswith("Error reloading"):
            raise
        cause = f"{type(e.__cause__).__name__}: {e.__cause__}" if e.__cause__ else str(e)
        raise ConfigError(f"{project}: keras-tuner cannot reload this search's state ({cause}): a file of it is "
                          f"damaged or was removed (oracle.json names every trial, each trial_N/ holds one); "
                          f"pass --overwrite to start the search afresh") from None
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
        tuner.write_tables()
        raise TfSharpCFError(f"search stopped: {e}".splitlines()[0]) from None
    run_seconds = time.perf_counter() - start
    rows = tuner.write_tables()

    best = tuner.oracle.get_best_trials(1)
    if not best or str(best[0].status) != "COMPLETED":
        raise TfSharpCFError(f"search finished without a completed trial; see {project}/trials.md")
    best_trial = best[0]
    best_row = next(r for r in rows if r["trial"] == best_trial.trial_id)
    best_config = final_config(settings.trial_config(best_trial.hyperparameters.values), best_row)
    write_best_config(project, best_config)

    summary = {
        "method": settings.method, "dataset": settings.base.data.dataset, "algorithm": settings.algorithm,
        "trials": len(rows), "completed": sum(1 for r in rows if r["status"] == "COMPLETED"),
        "best_trial": best_trial.trial_id, "best_hyperparameters": best_row["hyperparameters"],
        "validation": {OBJECTIVE: best_row[OBJECTIVE], SECONDARY: best_row[SECONDARY],
                       "epoch": best_row["best_epoch"], "stopped_epoch": best_row.get("stopped_epoch")},
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
    same = run_dir.is_started(folder) and _absolute(run_dir.read_config(folder)) == _absolute(config)
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


def _absolute(config: Config) -> Config:
    """`config` with its data_dir (a path from the working directory) absolute."""
    data_dir = config.data.data_dir
    return config.replace(data={"data_dir": None if data_dir is None else os.path.abspath(data_dir)})
