"""The training flags that `fit`, `tune` and `pipeline` share, in one table.

`TRAINING_FLAGS` maps each flag to its `Config` field; the hyper-parameters
that a method or a loss owns (`params.Param`) are added from their
registries. TensorFlow-free.
"""
from __future__ import annotations

import argparse

from tf_sharpcf import params
from tf_sharpcf.config import LOSSES, METHODS, OPTIMIZERS, SAMPLERS, SIMILARITIES, STRATEGIES, Config

_D = Config()
# (dest, option names, Config (section, field) or None, argparse kwargs): the
# one table behind fit's and the tuner's flags and the flag -> field mapping.
# Defaults are written into each help text (they come from Config, and the
# flags' own default is None so that --config values are not overridden).
TRAINING_FLAGS = [
    ("config", ["--config"], None,
     {"help": "JSON config file (config.json or best_hyperparameters.json); its data_dir is not used: "
              "--data-dir, else $TF_SHARPCF_DATA, else the cache"}),
    ("dataset", ["--dataset"], ("data", "dataset"),
     {"help": f"gowalla, yelp2018, amazon-book, ml-1m, or a folder (default {_D.data.dataset})"}),
    ("data_dir", ["--data-dir"], ("data", "data_dir"),
     {"help": "data directory (default $TF_SHARPCF_DATA or ~/.cache/tf_sharpcf)"}),
    ("no_download", ["--no-download"], None,
     {"action": "store_true", "help": "never download a missing dataset"}),
    ("method", ["--method"], ("train", "method"),
     {"choices": METHODS, "help": f"the regulariser on the loss: none (bpr), apr or sharpcf "
                                  f"(default {_D.train.method})"}),
    ("loss", ["--loss"], ("train", "loss"),
     {"choices": LOSSES, "help": f"the loss on the scores: bpr (Eq. 3), softmax (sampled softmax over the "
                                 f"positive and its K negatives), hardest (BPR on the hardest of K) "
                                 f"(default {_D.train.loss})"}),
    ("epochs", ["--epochs"], ("train", "epochs"),
     {"type": int, "help": f"total epochs (default {_D.train.epochs})"}),
    ("warmup_epochs", ["--warmup-epochs"], ("train", "warmup_epochs"),
     {"type": int, "help": f"E_start: epochs of the bare loss (no regulariser) before APR/SharpCF "
                          f"(default {_D.train.warmup_epochs})"}),
    # each method's and loss's own hyper-parameters (`params.Param`)
    *[(p.field, [p.flag], ("train", p.field),
       {"dest": p.field, "type": p.kind, "help": f"{p.help} (default {getattr(_D.train, p.field)})"})
      for p in params.all_params()],
    ("dim", ["--dim"], ("model", "dim"),
     {"type": int, "help": f"embedding size (default {_D.model.dim})"}),
    ("init_std", ["--init-std"], ("model", "init_std"),
     {"type": float, "help": f"std of the normal initialiser (default {_D.model.init_std})"}),
    ("similarity", ["--similarity"], ("model", "similarity"),
     {"choices": SIMILARITIES, "help": f"score e_u·e_i, or its cosine, in training, ranking and the exported "
                                       f"index (default {_D.model.similarity})"}),
    ("batch_size", ["--batch-size"], ("train", "batch_size"),
     {"type": int, "help": f"(default {_D.train.batch_size})"}),
    ("negatives", ["--negatives"], ("train", "negatives"),
     {"type": int, "metavar": "K", "help": f"negatives per positive, the loss averaged over the K pairs "
                                           f"(default {_D.train.negatives})"}),
    ("sampler", ["--sampler"], ("train", "sampler"),
     {"choices": SAMPLERS, "help": f"how the K negatives are drawn among the user's non-training items: "
                                   f"uniform, popularity (∝ count^β), dns (the highest-scored of M uniform "
                                   f"candidates), shared (one pool of K per batch, scored by every row) "
                                   f"(default {_D.train.sampler})"}),
    ("lr", ["--lr"], ("train", "lr"),
     {"type": float, "help": f"learning rate (default {_D.train.lr})"}),
    ("method_lr", ["--method-lr"], ("train", "method_lr"),
     {"type": float, "help": f"learning rate from E_start (--warmup-epochs) on, for every method, BPR "
                            f"too; 0: --lr throughout (default {_D.train.method_lr})"}),
    ("optimizer", ["--optimizer"], ("train", "optimizer"),
     {"choices": OPTIMIZERS, "help": f"(default {_D.train.optimizer})"}),
    ("initial_accumulator", ["--initial-accumulator"], ("train", "initial_accumulator"),
     {"type": float, "help": f"--optimizer adagrad: the accumulators' initial value; on the batch-mean "
                             f"loss, 0.1 / batch² is a summed loss's 0.1 (default {_D.train.initial_accumulator})"}),
    ("l2", ["--l2"], ("train", "l2"),
     {"type": float, "help": f"L2 weight on the batch embeddings (default {_D.train.l2})"}),
    ("seed", ["--seed"], ("train", "seed"),
     {"type": int, "help": f"(default {_D.train.seed})"}),
    ("steps_per_execution", ["--steps-per-execution"], ("train", "steps_per_execution"),
     {"type": int, "help": "batches per call into the compiled graph (0: 128)"}),
    ("jit_compile", ["--jit"], ("train", "jit_compile"),
     {"dest": "jit_compile", "action": argparse.BooleanOptionalAction, "default": None,
      "help": "XLA-compile the train step (default: on, with --strategy default only); --no-jit: slower "
              "epochs, no compile time"}),
    ("strategy", ["--strategy"], ("train", "strategy"),
     {"choices": STRATEGIES, "help": f"tf.distribute: one device, every local device (mirrored), the "
                                     f"workers in $TF_CONFIG (multi-worker), or its chief, workers and "
                                     f"parameter servers (parameter-server); see docs/scaling.md "
                                     f"(default {_D.train.strategy})"}),
    ("eval_every", ["--eval-every"], ("eval", "eval_every"),
     {"type": int, "help": f"evaluate every N epochs (default {_D.eval.eval_every})"}),
    ("patience", ["--patience"], ("eval", "patience"),
     {"type": int, "metavar": "N", "help": f"early stopping: stop after N evaluations in a row (every "
                                           f"--eval-every epochs) with no gain of Recall@max K over the best "
                                           f"so far (fit evaluates on test, tune's trials on validation); APR "
                                           f"and SharpCF count, and take the best, only after their warm-up "
                                           f"(--warmup-epochs), which is never cut short; 0: off "
                                           f"(default {_D.eval.patience})"}),
    ("ks", ["--k"], ("eval", "ks"),
     {"dest": "ks", "type": int, "nargs": "+", "help": f"cut-offs K (default {list(_D.eval.ks)})"}),
    ("eval_user_batch", ["--eval-user-batch"], ("eval", "user_batch"),
     {"type": int, "help": f"users per scoring matmul (default {_D.eval.user_batch})"}),
    ("checkpoint_every", ["--checkpoint-every"], ("train", "checkpoint_every"),
     {"type": int, "help": f"write checkpoints/last/ (to resume from) every N epochs and after the last; "
                           f"0: only after the last (default {_D.train.checkpoint_every})"}),
]
# flag -> (section, field)
FLAGS = {dest: field for dest, _, field, _ in TRAINING_FLAGS if field}
# Flags that may differ from the run's config.json under --resume: the epoch
# count, and two that leave the numbers alone: where the data is found (not
# what it is) and how often the run is checkpointed.
RESUME_MAY_CHANGE = ("epochs", "data_dir", "checkpoint_every")
# dest -> its option name where that is not --<dest with dashes>
OPTION_NAMES = {dest: names[0] for dest, names, _, _ in TRAINING_FLAGS
                if names[0] != "--" + dest.replace("_", "-")}


def add_training_flags(group, skip=(), helps=None) -> None:
    """Adds the Config flags (fit's, and the tuner's minus its search space).

    group: an ArgumentParser or argument group; skip: dests (FLAGS keys, or
    "config"/"no_download") to leave out; helps: {dest: help} replacing the
    default help of those flags.
    """
    helps = dict(helps or {})
    for dest, names, _, kwargs in TRAINING_FLAGS:
        if dest in skip:
            continue
        if dest in helps:
            kwargs = {**kwargs, "help": helps.pop(dest)}
        group.add_argument(*names, **kwargs)
    if helps:
        raise ValueError(f"help for unknown or skipped flags: {sorted(helps)}")
