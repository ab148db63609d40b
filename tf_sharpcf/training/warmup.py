"""The shared warm-up of BPR, APR and SharpCF runs, and starting runs from it:
the one warm-start service of the experiment runner and the tuner.

For one seed, the first E_start epochs of BPR, APR and SharpCF are the same
BPR epochs: APR's warm-up objective is BPR, SharpCF's trajectory term is off
before E_start, and every epoch's batches are a pure function of
(seed, epoch). They are therefore trained once (`warmup_config`: the bare
loss, or, when a run continues state recorded in it, the objective its method's
`methods.Recording` declares, e.g. SharpCF with λ = 0, whose gradients are
BPR's and which records the positive scores of its last W epochs), and every
run starts from that warm-up's checkpoint (`continue_from`): its model and
optimizer, and its objective's state continued from the recorded one
(`Objective.continue_from`, e.g. SharpCF's E-slot table re-slotted). The
runner's warm-up is a run of its own; `branch` makes each method's run folder
from it (the warm-up's history rows, best-so-far and best checkpoint, and a
training checkpoint at epoch E_start) for the ordinary resume
(`train_and_evaluate(start=Start.resuming())`). The tuner's are cached by
`sharing_key` (`tuning/warm_starts.py`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

from tf_sharpcf.training import checkpointing, run_dir
from tf_sharpcf import losses, methods, samplers
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.errors import DataError

_NEUTRAL = Config().train


def method_fields():
    """Train fields that only act after the warm-up (or only name the run):
    the method, the epoch count, the lr from E_start on and every registered
    method's own fields. Runs that differ only in these share their first
    E_start epochs."""
    return ("method", "epochs", "method_lr", *methods.method_fields())


def sharing_key(config: Config) -> Config:
    """`config` with the method-only fields reset, and the fields of other
    losses and samplers than its own, and its early stopping (a warm-up is
    never stopped early, `early_stopping.phase_start`): equal keys, equal warm-ups. The one
    definition of what a warm-up trains (the tuner's `WarmStarts.key` reads it too)."""
    reset = (*method_fields(), *losses.unused_fields(config.train.loss),
             *samplers.unused_fields(config.train.sampler))
    return config.replace(train={f: getattr(_NEUTRAL, f) for f in reset}, eval={"patience": 0})


def can_branch(config: Config) -> bool:
    """True when `config`'s first E_start epochs are the shared BPR warm-up:
    a method that starts from one (`methods.Method.warm_start`), or BPR
    itself unless it stops early (it may stop within those epochs), with a
    warm-up shorter than the run."""
    t = config.train
    method = methods.get(t.method)
    bpr = method.name == methods.WARMUP_METHOD and not config.eval.patience
    return (method.warm_start or bpr) and 0 < t.warmup_epochs < t.epochs


def warmup_config(configs: Sequence[Config], window: int = 1) -> Config:
    """The warm-up run shared by `configs` (all `can_branch`, one `sharing_key`):
    its first E_start epochs, as a config of `epochs` = E_start.

    The objective of the runs' `methods.Recording` when any of them continues
    recorded state (SharpCF: λ = 0, recording W epochs, W = the most any of
    them reads and at least `window`), else the bare loss (`methods.WARMUP_METHOD`).
    """
    keys = {sharing_key(c) for c in configs}
    if len(keys) != 1 or not all(can_branch(c) for c in configs):
        raise ValueError("these runs do not share one warm-up")
    # A warm-up is never stopped early (`early_stopping.phase_start`): it trains all E_start epochs.
    base = configs[0].replace(eval={"patience": 0}, train={"method_lr": _NEUTRAL.method_lr})
    warm = configs[0].train.warmup_epochs
    recording = [(methods.get(c.train.method).recording, c.train) for c in configs
                 if methods.get(c.train.method).recording is not None]
    if not recording:
        return base.replace(train={"method": methods.WARMUP_METHOD, "epochs": warm})
    if len({r for r, _ in recording}) > 1:
        raise ValueError("these runs record different state in their warm-up: they do not share one")
    recorded = max(window, *(r.needs(t) for r, t in recording))
    return base.replace(train={**recording[0][0].warmup(recorded), "epochs": warm})


def continue_from(checkpoint: Path, warm: Config, config: Config, data: Interactions):
    """-> (model, optimizer, meta): a run of `config` as it stands after the
    warm-up run of `warm` (`warmup_config`; it trained epochs [0,
    warm.train.epochs)), whose checkpoint folder is `checkpoint`; the model
    is not compiled, meta is the checkpoint's.

    The embeddings, epoch counter and optimizer state are the warm-up's; the
    state of `config`'s objective (`Objective.state`), if it has any, is
    continued from what the warm-up's objective recorded
    (`Objective.continue_from`). DataError naming the folder when the
    checkpoint holds no such recording.
    """
    from tf_sharpcf.training import train
    objective = methods.make_objective(config.train, data.num_train)
    if not objective.state():
        # The warm-up's model without its state (a BPR model of the same config has the same variables).
        model, _, optimizer = train.build_model(config.replace(train={"method": methods.WARMUP_METHOD}), data)
        meta = checkpointing.restore(checkpoint, model, optimizer)
        return model, optimizer, meta
    # The warm-up's own model, its recorded state attached, restored whole;
    # then the run's state takes the recording's place on the model.
    model, recorder, optimizer = train.build_model(warm, data)
    missing = sorted(set(objective.state()) - (set(recorder.state()) & checkpointing.model_attributes(checkpoint)))
    if missing:
        raise DataError(f"{checkpoint}: the warm-up's checkpoint holds no {', '.join(missing)} state "
                        f"for {config.train.method} to continue from")
    meta = checkpointing.restore(checkpoint, model, optimizer)
    objective.continue_from(recorder, warm.train.epochs)
    train.attach_state(model, objective)
    return model, optimizer, meta


def branch(warm_dir: Path, config: Config, out: Path, data: Interactions) -> None:
    """Makes `out` a run of `config` that has trained `warm_dir`'s epochs.

    `warm_dir` is a finished run of the `warmup_config` of `config`'s group. `out` is written
    in a temporary folder and renamed into place, so it is either complete or
    absent. Then `train.train_and_evaluate(config, out, data, start=train.Start.resuming())`
    trains its remaining epochs.
    """
    warm_dir, out = Path(warm_dir), Path(out)
    found = checkpointing.find(warm_dir / run_dir.LAST)
    if found is None or not run_dir.is_finished(warm_dir):
        raise ValueError(f"{warm_dir}: the warm-up run has not finished")
    tmp = out.with_name(f".{out.name}.branch")
    run_dir.remove(tmp)
    tmp.mkdir(parents=True)
    best = warm_dir / run_dir.BEST
    if checkpointing.find(best) is not None:
        shutil.copytree(checkpointing.find(best), tmp / run_dir.BEST)
    for name in run_dir.EMBEDDINGS:
        if (warm_dir / name).exists():
            shutil.copy2(warm_dir / name, tmp / name)

    model, optimizer, meta = continue_from(found, run_dir.read_config(warm_dir), config, data)
    # The warm-up's recording is not this method's log: other methods' log entries are dropped.
    others = set(methods.log_names()) - set(methods.get(config.train.method).log_names)
    rows = [{k: v for k, v in r.items() if k not in others} for r in meta["history"]]
    checkpointing.write(tmp / run_dir.LAST, model, optimizer, {**meta, "history": rows})
    run_dir.write_config(tmp, config)        # tmp is out's sibling: the same relative data_dir
    run_dir.remove(out)
    os.replace(tmp, out)


def shared_warmups(configs: Sequence[Config]) -> "list[tuple[Optional[Config], list[int]]]":
    """Groups `configs` by the warm-up they can share.

    -> [(warm-up config or None, indices into `configs`)]: runs that branch
    from one warm-up (two or more with one `sharing_key`), then each run that
    trains alone (warm-up None).
    """
    groups = {}
    for i, c in enumerate(configs):
        groups.setdefault(sharing_key(c) if can_branch(c) else ("alone", i), []).append(i)
    out = []
    for key, members in groups.items():
        if isinstance(key, Config) and len(members) > 1:
            out.append((warmup_config([configs[i] for i in members]), members))
        else:
            out.extend((None, [i]) for i in members)
    return out
