"""`python -m tf_sharpcf.tune`: search hyper-parameters with keras-tuner on a validation split.

    python -m tf_sharpcf.tune --dataset ml-1m --method sharpcf --max-trials 20 \\
        --lambda-range 0.01 1 --window-values 1 3 5 --fix lr=0.005

Each tunable hyper-parameter takes --NAME-range LO HI (log-uniform for
floats), --NAME-values V [V ...] (a choice), or --fix NAME=VALUE. Re-running
the same command continues the search in --directory/--project-name; finished
trials are not run again. See docs/tuning.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import List, Optional

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch first)
if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
from tf_sharpcf import params, presets
from tf_sharpcf.cli import fit
from tf_sharpcf.cli import exits
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError

def build_parser() -> argparse.ArgumentParser:
    from tf_sharpcf.tuning.search_space import ALGORITHMS, PARAMETERS
    p = argparse.ArgumentParser(prog="python -m tf_sharpcf.tune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    d = Config()
    base = p.add_argument_group("training settings shared by every trial (as in fit)")
    # The searchable ones (every method's own, lr, L2) are set with --fix instead;
    # K and the batch size keep fit's flags too (--negatives-values etc. search them).
    own = tuple(q.field for q in params.all_params())
    fit.add_training_flags(base, skip=(*own, "lr", "l2", "method_lr", "strategy", "ks"), helps={
        "config": "JSON config file to start from (flags override it)",
        "epochs": f"total epochs per trial (default {d.train.epochs})",
        "warmup_epochs": f"E_start: epochs of the bare loss, trained once and shared by trials "
                         f"(default {d.train.warmup_epochs})",
        "checkpoint_every": "each trial's checkpoints/last/ (to continue a killed trial) every N epochs "
                            f"(0: only after the last; default {d.train.checkpoint_every})"})
    # none by default: a search's command states what it fixes (docs/tuning.md)
    fit.add_preset_flag(base, presets.NONE)

    defaults = ", ".join(f"{q.name} {q.default.describe()}" for q in PARAMETERS.values() if q.default)
    space = p.add_argument_group(f"search space (defaults: {defaults}; "
                                 + " and ".join(q.name for q in PARAMETERS.values() if not q.default)
                                 + " only when given)")
    for param in PARAMETERS.values():
        one = space.add_mutually_exclusive_group()
        one.add_argument(f"--{param.flag}-range", nargs=2, type=param.kind, metavar=("LO", "HI"),
                         help=f"{param.doc}: sample in [LO, HI]" + (" (integers)" if param.kind is int
                                                                     else " log-uniformly"))
        one.add_argument(f"--{param.flag}-values", nargs="+", type=param.kind, metavar="V",
                         help=f"choose {param.name} among these")
    space.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                       help="hold a hyper-parameter at VALUE (repeatable), e.g. --fix lr=0.005")

    s = p.add_argument_group("search")
    s.add_argument("--search", choices=ALGORITHMS, default="bayesian", help="keras-tuner oracle (default bayesian)")
    s.add_argument("--max-trials", type=int, help="trials in all, counting finished ones (default 20)")
    s.add_argument("--initial-points", type=int,
                   help="bayesian: random trials before the Gaussian process (default min(3 x dims, trials/2))")
    s.add_argument("--hyperband-factor", type=int, default=3, help="hyperband: reduction factor (default 3)")
    s.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each user's training interactions held out for the objective (default 0.1)")
    s.add_argument("--directory", default="tuning", help="keras-tuner directory; warm-ups are cached in "
                                                         "<directory>/warmup/ (default tuning)")
    s.add_argument("--project-name", help="search folder inside --directory (default <dataset>-<method>)")
    again = s.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the search in the project with its stored settings (only --max-trials "
                            "may change); a plain re-run with the same flags continues it too")
    again.add_argument("--overwrite", action="store_true", help="delete the project's trials and start again")
    s.add_argument("--no-final", action="store_true",
                   help="skip the final retrain of the best configuration on all training data (tested on test)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def settings_from_args(args: argparse.Namespace):
    from tf_sharpcf.tuning import search_space as space_lib
    from tf_sharpcf.tuning.settings import SearchSettings
    for flag in fit.FLAGS:                  # fit's mapping of flags to Config fields
        if not hasattr(args, flag):
            setattr(args, flag, None)
    base = fit.config_from_args(args)
    if base.train.strategy != "default":
        raise ConfigError(f"invalid --config: strategy {base.train.strategy!r}; the search trains its trials on "
                          "one device (train the chosen configuration with fit --strategy ...)")
    overrides = {}
    for name, param in space_lib.PARAMETERS.items():
        rng, values = getattr(args, f"{name}_range"), getattr(args, f"{name}_values")
        if rng is not None:
            overrides[name] = space_lib.Space.range(*rng)
        elif values is not None:
            overrides[name] = space_lib.Space.choice(*values)
    for text in args.fix:
        name, space = space_lib.parse_fix(text)
        if name in overrides and overrides[name].kind != "fixed":
            flag = f"--{space_lib.PARAMETERS[name].flag}-{overrides[name].kind}"
            raise ConfigError(f"invalid --fix: {name} also has {flag}")
        overrides[name] = space
    if args.preset != presets.NONE:
        # a recipe's lr and L2 go with its optimizer and batch: held unless searched
        for name in ("lr", "l2"):
            overrides.setdefault(name, space_lib.Space.fixed(getattr(base.train, space_lib.PARAMETERS[name].field)))
    return SearchSettings(
        base=base, space=space_lib.search_space(base.train.method, overrides, base.train.loss,
                                                base.train.sampler),
        algorithm=args.search,
        max_trials=20 if args.max_trials is None else args.max_trials, initial_points=args.initial_points,
        hyperband_factor=args.hyperband_factor, val_fraction=args.val_fraction).validate()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from tf_sharpcf.tuning import tuner
        from tf_sharpcf.tuning.settings import load_settings
        if args.resume:
            _check_resume_flags(args)
            project = args.project_name or _default_project(args)
            settings = load_settings(Path(args.directory), project)
            if args.max_trials is not None:
                settings = dataclasses.replace(settings, max_trials=args.max_trials)
            settings.validate()
        else:
            settings = settings_from_args(args)
            project = args.project_name or _default_project(args, settings.base)
        from tf_sharpcf.training import run_dir
        # One process per search project (the lock file sits beside it: --overwrite removes the folder).
        with run_dir.FolderLock(Path(args.directory) / f".{project}.lock", Path(args.directory) / project,
                                "--project-name"):
            summary = tuner.search(settings, Path(args.directory), project, overwrite=args.overwrite,
                                    final=not args.no_final, verbose=0 if args.quiet else 1)
        print(json.dumps(summary, indent=2))
        return 0
    return exits.run(run)


RESUME_FLAGS = {"resume", "max_trials", "directory", "project_name", "no_final", "quiet", "dataset", "method"}


def _check_resume_flags(args: argparse.Namespace) -> None:
    """--resume takes the stored settings: other settings would be silently ignored."""
    defaults = vars(build_parser().parse_args([]))
    given = sorted(k for k, v in vars(args).items() if k not in RESUME_FLAGS and v != defaults.get(k))
    if given:
        raise ConfigError(f"invalid --resume: the search keeps its stored settings; drop "
                          f"{', '.join('--' + k.replace('_', '-') for k in given)} (or re-run without --resume)")


def _default_project(args: argparse.Namespace, base: Optional[Config] = None) -> str:
    dataset = base.data.dataset if base else (args.dataset or Config().data.dataset)
    method = base.train.method if base else (args.method or Config().train.method)
    return f"{Path(dataset).name or 'data'}-{method}"


if __name__ == "__main__":
    sys.exit(main())
