"""The method registry: what each training method is, declared once.

A method is the regulariser around the run's loss on scores (`losses.py`):
none ("bpr", the paper's BPR when the loss is BPR), APR or SharpCF.

A `Method` names its objective (`build`), its label and colour in tables and
figures, the hyper-parameters only it reads (`Param`: field, flag,
validation, search domain), what its objective logs beyond BPR's and where
those columns go, whether it starts from a shared BPR warm-up and what that
warm-up records for it (`Recording`), its cost, and, where it has one, which
logged term is not yet in the loss. `config` (the `--method` choices and the
checks), `fit` (the flags), `train` (history columns, inactive terms, epoch timing),
`make_objective`, `search_space`, `warm_starts` (the tuner's), `warmup` and
`runner` (the experiment runner's) and `plots` read it; registering a
`Method` is all a new objective needs to appear in `fit --method`,
`history.csv`, TensorBoard and `tune`. Flags are read when the command-line
modules are imported, so a method with new `Param`s is registered before
that (an objective without any may be registered at any time).

TensorFlow-free: `build` imports the objectives when called, so the command
lines can check their flags before TensorFlow loads.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

from tf_sharpcf.losses import make_loss
from tf_sharpcf.params import Param, Part, Parts  # noqa: F401 (Param: declared there, re-exported)

# "bpr_loss" stands for the run's loss on scores (`losses.Loss.log_name`).
BASE_LOGS = ("loss", "bpr_loss", "reg_loss")
# What every warm_start method trains for its first warmup_epochs epochs: the
# bare loss on scores, no regulariser (the method "bpr", whatever `--loss`).
WARMUP_METHOD = "bpr"


@dataclasses.dataclass(frozen=True)
class Recording:
    """State that a method's runs continue from the shared warm-up, recorded
    there over its last epochs (SharpCF: the trajectory table, `Objective.state`).

    span: the method's `Param` saying how many epochs of it a run reads
      (SharpCF's window E); one warm-up records the most its runs read.
    warmup: W -> the warm-up's train overrides: the method's objective set so
      that its gradients are the bare loss's while it records W epochs
      (SharpCF with λ = 0 and window W).
    """

    span: Param
    warmup: Callable[[int], dict]

    def needs(self, train_config) -> int:
        """How many epochs of recorded state a run of `train_config` reads."""
        return int(getattr(train_config, self.span.field))


@dataclasses.dataclass(frozen=True)
class Method(Part):
    """One training method.

    name: the `--method` value. label, color: tables and figures.
    params: the hyper-parameters only this method reads (`Param`; warmup_epochs
      aside); `fields` are their TrainConfig fields.
    extra_logs: what the objective logs beyond `BASE_LOGS`.
    log_rank: where `extra_logs` go among the methods' columns of history.csv
      (ascending, then registration order; None: after the ranked ones).
    warm_start: its first `warmup_epochs` epochs are plain BPR, so runs and
      trials can branch from one shared warm-up.
    recording: what that warm-up records for the branched run to continue
      from (`Recording`), None if nothing.
    passes: forward/backward passes per step, its cost relative to BPR's: the
      experiment runner trains a seed's costlier methods last.
    build: (train_config, num_train, retry_safe) -> the `Objective`.
    inactive: train_config -> (epoch -> logged terms not in that epoch's loss).
    """

    name: str
    label: str
    color: str
    build: Callable
    params: Tuple[Param, ...] = ()
    extra_logs: Tuple[str, ...] = ()
    log_rank: Optional[int] = None
    warm_start: bool = False
    recording: Optional[Recording] = None
    passes: int = 1
    inactive: Optional[Callable] = None

    @property
    def log_names(self) -> Tuple[str, ...]:
        return BASE_LOGS + self.extra_logs

    def inactive_terms(self, train_config) -> Callable[[int], Tuple[str, ...]]:
        """epoch (0-based) -> the logged terms not in that epoch's loss."""
        if self.inactive is None:
            return lambda epoch: ()
        return self.inactive(train_config)


PARTS = Parts("method")       # the registered methods; also a live view of their names (`config.METHODS`)
register, unregister, get, names = PARTS.register, PARTS.unregister, PARTS.get, PARTS.names
all_methods, all_params, method_fields = PARTS.all, PARTS.all_params, PARTS.fields


def label(name: str) -> str:
    """The registered method's label in tables and figures; an unknown name as it is."""
    return get(name).label if name in PARTS else name


def make_objective(train_config, num_train: int, retry_safe: bool = False):
    """The `Objective` of the method named by `train_config.method`.
    retry_safe: SharpCF's table with E + 1 slots (`TrajectoryTable`), for
    strategies that may run a step twice (parameter-server)."""
    return PARTS.build(train_config.method, train_config, num_train, retry_safe)


def log_names() -> Tuple[str, ...]:
    """Every registered method's logs, each once, in history.csv's order: the
    base logs, then each method's `extra_logs` by `log_rank`."""
    ranked = sorted(all_methods(), key=lambda m: (m.log_rank is None, m.log_rank or 0))
    return tuple(dict.fromkeys(n for m in ranked for n in m.log_names))


# ---------------------------------------------------------------------------
# The paper's three


def _bpr(t, num_train, retry_safe=False):
    from tf_sharpcf.objectives.bpr import BPR
    return BPR(l2=t.l2, loss=make_loss(t))


def _apr(t, num_train, retry_safe=False):
    from tf_sharpcf.objectives.apr import APR
    return APR(eps=t.eps, adv_weight=t.adv_weight, l2=t.l2, negatives=t.negatives, loss=make_loss(t))


def _sharpcf(t, num_train, retry_safe=False):
    from tf_sharpcf.objectives.sharpcf import SharpCF
    from tf_sharpcf.objectives.trajectory import TrajectoryTable
    return SharpCF(TrajectoryTable(t.window, num_train, retry_safe=retry_safe), lam=t.lam,
                   warmup_epochs=t.warmup_epochs, l2=t.l2, loss=make_loss(t))


def _sharpcf_inactive(t):
    """The trajectory term is off before E_start and a filled table, and at λ = 0."""
    start = max(t.warmup_epochs, t.window)
    return lambda epoch: ("trajectory_loss",) if epoch < start or t.lam == 0 else ()


APR_PARAMS = (
    Param("eps", "eps", float, 0, "APR's perturbation norm ρ", "rho", ("range", (0.01, 1.0)),
          "APR's perturbation norm ρ"),
    Param("adv_weight", "adv_weight", float, 0, "APR's α", "alpha", ("range", (0.1, 10.0)),
          "APR's adversarial weight α"),
)
SHARPCF_WINDOW = Param("window", "window", int, 1, "E: SharpCF's epoch window", "E", ("range", (1, 7)),
                       "SharpCF's epoch window E (the paper's Fig. 6 range)")
SHARPCF_PARAMS = (
    Param("lam", "lambda", float, 0, "SharpCF's λ", "", ("range", (1e-3, 10.0)),
          "SharpCF's λ (the paper's Fig. 5 range)"),
    SHARPCF_WINDOW,
)

# SharpCF's warm-up: λ = 0 (its gradients are the bare loss's) with a W-epoch table.
SHARPCF_RECORDING = Recording(SHARPCF_WINDOW, lambda w: {"method": "sharpcf", "lam": 0.0, "window": w})

# history.csv has SharpCF's column before APR's (log_rank), as the committed runs do.
register(Method("bpr", "BPR", "tab:blue", _bpr))
register(Method("apr", "APR", "tab:orange", _apr, params=APR_PARAMS, extra_logs=("adversarial_loss",),
                log_rank=2, warm_start=True, passes=2))
register(Method("sharpcf", "SharpCF", "tab:green", _sharpcf, params=SHARPCF_PARAMS,
                extra_logs=("trajectory_loss",), log_rank=1, warm_start=True, recording=SHARPCF_RECORDING,
                inactive=_sharpcf_inactive))
