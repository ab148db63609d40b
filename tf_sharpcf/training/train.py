"""`train_and_evaluate(config, workdir)`: orchestration only.

Loads the data, builds the model, objective and optimizer, runs `fit` in two
phases (the objective's warm-up for epochs [0, E_start), then the objective)
until its last epoch or an early stop (`early_stopping.py`, --patience),
and writes the run's files into `workdir`:

  config.json, history.csv, metrics.json, tensorboard/,
  checkpoints/best/ (tf.train checkpoint of the best evaluated epoch),
  checkpoints/last/ (model + optimizer + history, to resume from),
  user_embeddings.npy, item_embeddings.npy (best epoch).

`start=Start.resuming()` continues the run in `workdir` from checkpoints/last/. Each
epoch's batches are a pure function of (seed, epoch), so the epoch count (and
the batch, after a stop mid-epoch) is all the input pipeline needs; on CPU
the resumed run is bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf

from tf_sharpcf import losses, methods, samplers
from tf_sharpcf.distribute import inputs, strategy as strategies
from tf_sharpcf.training import checkpointing, preemption, run_dir, signals
from tf_sharpcf.training.callbacks import (BestCheckpoint, EpochCounter, EpochTimer, Evaluate, History,
                                           LastCheckpoint, StopOnNonFiniteEpochLoss, StopOnNonFiniteLoss)
from tf_sharpcf.training.early_stopping import EarlyStopping, phase_start
from tf_sharpcf.training.progress import Progress
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.registry import load_dataset
from tf_sharpcf.errors import TrainingError
from tf_sharpcf.evaluation.metrics import column_names as metric_columns
from tf_sharpcf.evaluation.ranking import Evaluator
from tf_sharpcf.model import MatrixFactorization
from tf_sharpcf.optim.optimizers import make_optimizer

# Batches trained per call into the compiled graph when the config says 0:
# enough that the tables stay in place under XLA for most of an epoch.
DEFAULT_BATCHES_PER_CHUNK = 128


def history_columns(loss: str = losses.DEFAULT) -> Tuple[str, ...]:
    """history.csv's loss columns: every registered method's logs in their
    order (`methods.log_names`), with the run's loss on scores (`losses.py`)
    logged in BPR's place, then seconds."""
    name = losses.get(loss).log_name
    return (*(name if n == "bpr_loss" else n for n in methods.log_names()), "seconds")


def load_data(config: Config) -> Interactions:
    return load_dataset(config.data.dataset, config.data.data_dir, config.data.download)


def build_model(config: Config, data: Interactions, retry_safe: bool = False):
    """-> (model, objective, optimizer); the model is not compiled yet.
    retry_safe: for strategies that may run a step twice (`make_objective`)."""
    objective = methods.make_objective(config.train, data.num_train, retry_safe=retry_safe)
    model = MatrixFactorization(data.num_users, data.num_items, config.model.dim,
                                config.model.init_std, seed=config.train.seed,
                                similarity=config.model.similarity)
    attach_state(model, objective)
    optimizer = make_optimizer(config.train.optimizer, config.train.lr, config.train.initial_accumulator)
    return model, objective, optimizer


def attach_state(model, objective) -> None:
    """Makes each of the objective's state modules (`Objective.state`) the
    model's attribute of its name: tracked, so checkpoints carry it
    (`model/<name>/...`) and restoring the model restores it."""
    for name, module in objective.state().items():
        setattr(model, name, module)


def phases(objective, warmup_epochs: int, epochs: int, method_lr: float = 0.0):
    """[(start, end, objective)] with the warm-up objective first when it
    differs, or when the epochs from E_start on have their own lr."""
    warm = objective.warmup()
    if warmup_epochs <= 0 or (warm is objective and not method_lr):
        return [(0, epochs, objective)]
    split = min(warmup_epochs, epochs)
    out = [(0, split, warm)]
    if split < epochs:
        out.append((split, epochs, objective))
    return out


def fit_phase(model, objective, optimizer, data: Interactions, train_config, start: int, end: int,
              callbacks: Sequence[tf.keras.callbacks.Callback] = (), scheduled=None, first_batch: int = 0):
    """The one training recipe: `objective` for epochs [start, end) of a run
    of `train_config` (its batches, seed, K, XLA setting), on the strategy
    the model was built under. set_objective -> compile -> Keras `fit`.

    Default strategy: chunks of batches looped in the XLA-compiled step (with
    the fused row kernel where it applies); mirrored strategies: one global
    batch per step (`inputs.fit_input`); parameter-server: `scheduled`
    (`parameter_server.ScheduledSteps`) schedules the steps. -> Keras History.
    first_batch: epoch `start` goes on from this batch (`preemption.epoch_spans`).
    """
    t = train_config
    model.set_objective(objective)
    if scheduled is not None:
        from tf_sharpcf.distribute import parameter_server
        model.compile(optimizer=optimizer, jit_compile=False, pool=samplers.pool(t), shared=samplers.shared(t))
        scheduled.install(model)
        return model.fit(parameter_server.dummy_input(), initial_epoch=start, epochs=end,
                         steps_per_epoch=scheduled.batches.steps_per_epoch, callbacks=list(callbacks), verbose=0)
    if not any(isinstance(c, preemption.StopOnSignal) for c in callbacks):
        callbacks = [*callbacks, preemption.StopUnsaved()]     # e.g. the tuner's warm-up: nothing to save
    k = t.steps_per_execution or DEFAULT_BATCHES_PER_CHUNK
    # The sampler draws M candidates per negative (M > 1: dns); the step keeps K.
    sampler, pool = samplers.make_sampler(data, t), samplers.pool(t)
    spans = [(a, b, inputs.fit_input(model.distribute_strategy, data, t.batch_size, t.seed, a, b, k,
                                     t.jit_compile, samplers.draws(t), first_batch=first, sampler=sampler))
             for a, b, first in preemption.epoch_spans(start, end, first_batch)]
    fit_input = spans[0][2]
    model.compile(optimizer=optimizer, jit_compile=fit_input.jit_compile, negatives=t.negatives,
                  batch_size=t.batch_size, pool=pool, shared=samplers.shared(t),
                  steps_per_execution=fit_input.steps_per_execution)
    for a, b, fit_input in spans:
        history = model.fit(fit_input.dataset, initial_epoch=a, epochs=b, steps_per_epoch=fit_input.steps_per_epoch,
                            callbacks=list(callbacks), verbose=0)
        if model.stop_training:        # early stopping (`early_stopping.py`): no later span
            break
    return history


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a run begins (`train_and_evaluate(start=...)`), one of:

    * `Start()`: from scratch, epoch 0;
    * `Start.resuming()`: the run already in the workdir, from its
      checkpoints/last/ (model, optimizer, epoch count, history rows, best so
      far), or from scratch if it has none yet;
    * `Start.branch(folder, epoch)`: the model and optimizer state of a
      checkpoint folder (`checkpointing.write`), training from `epoch`
      (0-based), e.g. after a shared warm-up.
    """

    resume: bool = False
    checkpoint: Optional[Path] = None
    epoch: int = 0

    def __post_init__(self):
        if self.resume and (self.checkpoint is not None or self.epoch):
            raise ValueError("a resumed run starts where its own checkpoint says, not at a given checkpoint")

    @staticmethod
    def resuming(resume: bool = True) -> "Start":
        return Start(resume=bool(resume))

    @staticmethod
    def branch(checkpoint: Path, epoch: int) -> "Start":
        return Start(checkpoint=Path(checkpoint), epoch=int(epoch))


@signals.deferring("the run")        # SIGTERM/SIGINT: stop after the current chunk (preemption.py)
def train_and_evaluate(config: Config, workdir: Path, data: Optional[Interactions] = None,
                       verbose: int = 1, start: Start = Start(),
                       callbacks: Sequence[tf.keras.callbacks.Callback] = (), **removed) -> Dict:
    """Trains `config` and writes the run into `workdir` (created if missing).

    verbose: 0 prints nothing; 1 the run's progress (`progress.Progress`: a
    bar over the epochs on a terminal, plain lines elsewhere); 2 one line per
    epoch. start: where the run begins (`Start`). Returns the contents of
    metrics.json.

    Raises `TrainingError` (non-finite loss, a failed write) with a message
    naming the epoch or file and the last good checkpoint; `Stopped` after a
    chunk on SIGTERM/SIGINT (`signals`), checkpoints/last/ saved at that step
    (`preemption.py`; `Start.resuming()` goes on from it).

    callbacks: extra Keras callbacks, called after the run's own.
    """
    if removed:
        raise TypeError(f"train_and_evaluate: {', '.join(sorted(removed))} replaced by start=Start.resuming() "
                        "or start=Start.branch(checkpoint, epoch)")
    config.validate()
    resume, start_epoch = start.resume, start.epoch
    data = data if data is not None else load_data(config)
    t, e = config.train, config.eval
    # Before TensorFlow runs an op (MultiWorkerMirroredStrategy), and before the run folder: a
    # parameter-server chief whose cluster does not answer writes nothing (`cluster.wait_for_tasks`).
    strategy = strategies.make_strategy(t.strategy)
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise run_dir.WriteError(workdir, err) from None
    run_dir.write_config(workdir, config)
    scheduled = None       # parameter-server: the coordinator's step scheduling
    tf.keras.utils.set_random_seed(t.seed)
    with strategy.scope():
        model, objective, optimizer = build_model(config, data, retry_safe=t.strategy == "parameter-server")
    rows, best_so_far, in_epoch = [], None, None
    with strategy.scope():                  # restoring builds the optimizer's slots
        if resume and checkpointing.exists(workdir / run_dir.LAST):    # a damaged one is an error there
            meta = checkpointing.restore(workdir / run_dir.LAST, model, optimizer)
            start_epoch, rows, best_so_far = meta["epoch"], meta["history"], meta["best"]
            in_epoch = preemption.InEpoch.from_meta(meta)      # stopped mid-epoch by a signal
        elif start.checkpoint is not None:
            checkpointing.restore(start.checkpoint, model, optimizer)
    evaluator = Evaluator(data, e.ks, e.user_batch)
    metric_names = metric_columns(evaluator.ks)
    history = History(workdir / run_dir.HISTORY, [*history_columns(config.train.loss), *metric_names, "eval_seconds"],
                      workdir / run_dir.TENSORBOARD, rows=rows, verbose=int(verbose >= 2), resume=resume,
                      inactive=methods.get(t.method).inactive_terms(t))
    best = BestCheckpoint(workdir, monitor=f"recall@{evaluator.ks[-1]}", best=best_so_far)
    early = EarlyStopping(history, best.monitor, e.patience, e.eval_every, phase_start(t), t.epochs)
    k = t.steps_per_execution or DEFAULT_BATCHES_PER_CHUNK
    batches_per_step = 1 if strategies.is_mirrored(strategy) else k    # see inputs.fit_input
    if t.strategy == "parameter-server":
        from tf_sharpcf.distribute import parameter_server
        from tf_sharpcf.distribute import cluster
        with strategy.scope():
            batches = parameter_server.ShardedBatches(data, t.batch_size, t.seed, samplers.draws(t),
                                                      sampler=samplers.make_sampler(data, t, kernel=False))
        scheduled = parameter_server.ScheduledSteps(strategy, batches)
    # Under the parameter-server strategy the loss is checked per epoch: its steps are asynchronous.
    stop = (StopOnNonFiniteEpochLoss() if scheduled else
            StopOnNonFiniteLoss(batches_per_step, data.num_train, t.batch_size,
                                (in_epoch.epoch, in_epoch.batches) if in_epoch else (-1, 0)))
    timer = EpochTimer({in_epoch.epoch: in_epoch.seconds} if in_epoch else None)
    last = LastCheckpoint(workdir / run_dir.LAST, t.checkpoint_every, t.epochs, history, best)
    extra, callbacks = list(callbacks), [*([scheduled] if scheduled else []), EpochCounter(), timer, stop,
                 Evaluate(evaluator, e.eval_every, t.epochs), history, best, early, last]
    if verbose == 1:
        callbacks.append(Progress(history, t.epochs, every=max(1, min(e.eval_every, 10))))
    # Last: on SIGTERM/SIGINT every other callback has seen the step it stops after.
    callbacks += [*extra, (preemption.StopOnSignal if scheduled else preemption.StopInEpoch)(
        last, timer, workdir, start_epoch, in_epoch, batches_per_step, data.num_train, t.batch_size)]

    try:
        for begin, end, phase_objective in phases(objective, t.warmup_epochs, t.epochs, t.method_lr):
            optimizer.learning_rate = t.method_lr if t.method_lr and begin >= t.warmup_epochs else t.lr
            start = max(begin, start_epoch)
            if start >= end or early.met is not None:      # a resumed run may have stopped early
                continue
            first = in_epoch.batches if in_epoch and start == in_epoch.epoch else 0
            fit_phase(model, phase_objective, optimizer, data, t, start, end, callbacks, scheduled, first)
    except TrainingError as err:
        err.args = (f"{err}; {_last_checkpoint_note(workdir)}",)
        raise
    except tf.errors.OpError as err:
        if scheduled is None or not cluster.is_server_loss(err):
            raise
        cluster.close_native_log()      # the gRPC errors about the lost server would follow ours
        raise TrainingError(f"training stopped: {cluster.describe_loss(err)}; "
                            f"{_last_checkpoint_note(workdir)}; restart the cluster's tasks and continue "
                            f"with fit --resume {workdir}") from None
    if not history.rows:
        raise TrainingError(f"{workdir}: no epoch to train (epochs={t.epochs}, start epoch {start_epoch})")

    final_row = history.rows[-1]
    metrics = {
        "method": t.method,
        "dataset": data.name,
        "best": best.best,
        "final": {"epoch": final_row["epoch"], **{m: final_row[m] for m in metric_names}},
        # APR's and SharpCF's own epochs start after the warm-up (E_start).
        **epoch_seconds(history.rows, t.warmup_epochs if methods.get(t.method).warm_start else 0),
        "eval_seconds": statistics.median(r["eval_seconds"] for r in history.rows if "eval_seconds" in r),
        "epochs": t.epochs, "stopped_epoch": early.stopped_epoch, "patience": e.patience,
        "num_users": data.num_users,
        "num_items": data.num_items,
        "num_train": data.num_train,
        "test_users_evaluated": int(len(evaluator.users)),
        "cold_test_users": data.cold_test_users,
        "cold_test_items": data.cold_test_items,
    }
    run_dir.atomic_write_text(workdir / run_dir.METRICS, json.dumps(metrics, indent=2))
    return metrics


def epoch_seconds(rows, warmup_epochs: int) -> Dict[str, float]:
    """Median seconds per epoch of the method's own epochs (1-based epoch >
    warmup_epochs; all rows when none is past the warm-up), and of the
    warm-up's epochs when there are both: an APR epoch costs more than the
    BPR epochs of its warm-up, and Table 2 compares the methods' own."""
    own = [r["seconds"] for r in rows if r["epoch"] > warmup_epochs]
    warm = [r["seconds"] for r in rows if r["epoch"] <= warmup_epochs]
    out = {"seconds_per_epoch": statistics.median(own or warm)}
    if own and warm:
        out["seconds_per_warmup_epoch"] = statistics.median(warm)
    return out


def _last_checkpoint_note(workdir: Path) -> str:
    folder = checkpointing.find(workdir / run_dir.LAST)
    if folder is None:
        return "no training checkpoint was written yet"
    return f"the last good checkpoint is {folder} (epoch {checkpointing.read_meta(folder)['epoch']})"
