"""`python -m tf_sharpcf.fit`: train BPR, APR or SharpCF and evaluate it.

    python -m tf_sharpcf.fit --dataset gowalla

trains the dataset's validated recipe (`--preset`, `presets.py`): with no
other flag, the SharpCF run of its Table 2. Flags override `--config FILE`
(a JSON file as written to config.json, or the tuner's
best_hyperparameters.json), which overrides the preset.

    python -m tf_sharpcf.fit --resume runs/latest [--epochs 600]

continues an interrupted (or finished, with more --epochs) run from its last
checkpoint, with the run's own config.json.

Progress and the summary go to stderr; the metrics go to stdout as JSON when
stdout is not a terminal, or with --json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch first)
if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
from tf_sharpcf.training import run_dir
from tf_sharpcf import presets
from tf_sharpcf.cli import console, exits
from tf_sharpcf.config import Config
from tf_sharpcf.cli.flags import (FLAGS, OPTION_NAMES, RESUME_MAY_CHANGE, TRAINING_FLAGS,  # noqa: F401 (re-exported)
                                  add_training_flags)
from tf_sharpcf.errors import ConfigError

DEFAULT_OUTPUT_DIR = "runs/latest"

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tf_sharpcf.fit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=presets_epilog())
    add_training_flags(p)
    add_preset_flag(p, presets.AUTO)
    p.add_argument("--output-dir", help=f"where the run's files go (default {DEFAULT_OUTPUT_DIR}, created "
                                        "with its parents); the parent folder of one given must exist")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished or unfinished run in --output-dir")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its last checkpoint (its config.json; "
                        "only --epochs may change, and only grow)")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="no progress output and no summary")
    talk.add_argument("--verbose", action="store_true",
                      help="one line per epoch (default: a progress bar over the epochs on a terminal, "
                           "else a line per evaluated epoch and every few epochs)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout even on a "
                   "terminal (they are printed whenever stdout is not a terminal)")
    p.add_argument("--export", choices=("brute-force", "scann"),
                   help="then export a TF Serving retriever with this item index (tf_sharpcf.export)")
    p.add_argument("--export-name", help="its model name (default <dataset>_<method>)")
    p.add_argument("--export-base-dir", default="savedmodels", help="TF Serving model base folder (default savedmodels)")
    return p


def presets_epilog() -> str:
    """--help's list of the presets: what each sets that the library's defaults do not."""
    lines = ["Each flag's (default X) is the library's (--preset none); --preset auto first applies the",
             "dataset's validated recipe, which differs from those defaults in:"]
    for p in presets.PRESETS.values():
        changed = presets.changes(p)
        lines.append(f"  {p.name}: " + (", ".join(f"{k} {v}" for k, v in changed.items()) or "nothing"))
    lines.append(f"A folder of your own data gets {presets.FOLDER}'s. See docs/presets.md.")
    return "\n".join(lines)


def preset_line(choice: Optional[str], dataset: str) -> str:
    choice = choice or presets.default_choice()
    preset = presets.resolve(choice, dataset)
    if preset is None:
        return "settings: the library's defaults (--preset none), then --config and flags"
    return (f"settings: preset {preset.name} ({preset.source}), then --config and flags"
            + ("" if preset.name == dataset else f"; {dataset} has no preset of its own"
               if choice == presets.AUTO else ""))


def add_preset_flag(parser, default: str) -> None:
    """--preset: the settings a run starts from, under --config and the flags (`presets.py`)."""
    table = "; ".join(f"{p.name}: {p.source}" for p in presets.PRESETS.values())
    parser.add_argument(
        "--preset", choices=presets.names(), metavar="NAME", default=None if default == presets.AUTO else default,
        help=f"the validated recipe the run starts from, under --config and the flags: auto (the dataset's "
             f"own; a folder of your data, or a dataset never searched, gets {presets.FOLDER}'s, the best "
             f"across the datasets searched), none (the library's defaults), or a dataset's ({table}) "
             f"(default {default}" + (f", or ${presets.ENV}" if default == presets.AUTO else "") + ")")


def flag_sections(args: argparse.Namespace) -> dict:
    """The settings given as flags: {section: {field: value}}."""
    sections = {}
    for flag, (section, field) in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            sections.setdefault(section, {})[field] = tuple(value) if flag == "ks" else value
    if args.no_download:
        sections.setdefault("data", {})["download"] = False
    return sections


def resume_config(args: argparse.Namespace) -> Config:
    """The config.json of the run in --resume DIR; flags must agree with it,
    except --epochs (which may grow), --data-dir, --no-download and
    --checkpoint-every."""
    if args.config:
        raise ConfigError("invalid --config: not with --resume, which uses the run's own config.json")
    if args.overwrite:
        raise ConfigError("invalid --overwrite: not with --resume "
                          "(--overwrite starts over, --resume continues)")
    if args.output_dir is not None and Path(args.output_dir).resolve() != Path(args.resume).resolve():
        raise ConfigError(f"invalid --output-dir: --resume continues the run in {args.resume} and writes there")
    stored = run_dir.stored_config(Path(args.resume))
    sections = flag_sections(args)
    differ = []
    for flag, (section, field) in FLAGS.items():
        given = sections.get(section, {})
        has = getattr(getattr(stored, section), field)
        if flag not in RESUME_MAY_CHANGE and field in given and given[field] != has:
            name = OPTION_NAMES.get(flag, "--" + flag.replace("_", "-"))
            if flag == "jit_compile":
                name = "--jit" if given[field] else "--no-jit"
            differ.append(f"{name} (given {given[field]!r}, the run has {has!r})")
    if differ:
        raise ConfigError(f"invalid --resume: flags differ from {Path(args.resume) / run_dir.CONFIG}: "
                          f"{', '.join(differ)}; only --epochs may change when resuming")
    config = stored.replace(**sections).validate()
    if config.train.epochs < stored.train.epochs:
        raise ConfigError(f"invalid --epochs: the run in {args.resume} trains {stored.train.epochs} epochs; "
                          f"--epochs may only grow when resuming, got {config.train.epochs}")
    return config


def config_from_args(args: argparse.Namespace) -> Config:
    config = _config_from_args(args)
    if args.jit_compile is True and config.train.strategy != "default":
        raise ConfigError(f"invalid --jit: XLA compiles the train step on one device only; under --strategy "
                          f"{config.train.strategy} the step reaches other devices' or processes' variables "
                          f"and runs without XLA (drop --jit)")
    return config


def _config_from_args(args: argparse.Namespace) -> Config:
    """The defaults < the dataset's preset (`presets.py`) < --config FILE < flags."""
    if args.resume:
        if getattr(args, "preset", None) is not None:
            raise ConfigError("invalid --preset: not with --resume, which uses the run's own config.json")
        return resume_config(args)
    flags, given = flag_sections(args), {}
    if args.config:
        given = config_file_sections(args.config)
    dataset = flags.get("data", {}).get("dataset") or given.get("data", {}).get("dataset") or Config().data.dataset
    base = presets.base_config(getattr(args, "preset", None) or presets.default_choice(), dataset)
    recipe = base.replace(**given)
    config = presets.keep_optimizer_fields_with_their_optimizer(
        recipe.replace(**flags), chosen={**given.get("train", {}), **flags.get("train", {})}).validate()
    presets.warn_if_lr_unscaled(recipe, config)
    return config


def config_file_sections(path) -> dict:
    """The fields a --config JSON file gives, {section: {field: value}}, checked
    as `Config.from_file` checks them. Its data_dir is dropped: the data
    directory is this machine's, not the one that wrote the file (--data-dir,
    else $TF_SHARPCF_DATA, else the cache, as without --config; a config.json
    keeps what its run was given, for the record)."""
    try:
        sections = Config.sections_from_file(path)
    except ConfigError as e:
        raise ConfigError(f"invalid --config: {e}") from None
    sections.get("data", {}).pop("data_dir", None)
    return sections


def check_output_dir(path: Path, overwrite: bool, make_parents: bool = False) -> None:
    """Writable (probed), and holding no run unless `overwrite`."""
    run_dir.check_writable(path, "--output-dir", make_parents=make_parents)
    if overwrite:
        return
    if run_dir.is_finished(path):
        raise ConfigError(f"invalid --output-dir: {path} holds a finished run; "
                          "pass --overwrite or choose another directory")
    if run_dir.is_started(path):
        raise ConfigError(f"invalid --output-dir: {path} holds an unfinished run; pass --resume {path} "
                          "to continue it, --overwrite to start over, or choose another directory")


def summary(metrics, out: Path, exported=None) -> str:
    """What the run reached, where its files are, and what to do next."""
    def block(name):
        m = metrics[name]
        return (f"{name:5s} epoch {m['epoch']}: " +
                ", ".join(f"{k} {m[k]:.4f}" for k in m if k != "epoch"))
    lines = ["", block("best"), block("final"), *console.early_stop_lines(metrics),
             f"{metrics['seconds_per_epoch']:.2f} s per epoch; files in {out}/ (metrics.json, history.csv, "
             "checkpoints/, embeddings)", "next:"]
    if exported is None:
        lines.append(f"  python -m tf_sharpcf.export --run {out} --index brute-force    # a TF Serving retriever")
    lines.append(f"  tensorboard --logdir {out}/tensorboard")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        # A worker or ps task serves the chief: it needs no run folder and no
        # data (so `--resume DIR` works there too, without DIR).
        config = None if args.resume else config_from_args(args)
        if args.strategy == "parameter-server" or (config and config.train.strategy == "parameter-server"):
            from tf_sharpcf.distribute import cluster
            if cluster.role() != "chief":
                cluster.serve()
                return 0
        config = config or config_from_args(args)
        out = Path(args.resume or args.output_dir or DEFAULT_OUTPUT_DIR)
        if args.resume:
            run_dir.check_writable(out, "--resume")
        else:
            check_output_dir(out, args.overwrite, make_parents=args.output_dir is None)
        from tf_sharpcf.training import train  # TensorFlow is imported only once the flags are valid
        if args.export:
            from tf_sharpcf.serving import export
            from tf_sharpcf.serving.retriever import check_settings
            check_settings(args.export, args.export_name)
        data = train.load_data(config)
        print(data.describe(), file=sys.stderr)
        if not args.resume and not args.quiet:
            print(preset_line(args.preset, config.data.dataset), file=sys.stderr)
        # One process per run folder, from here to the end of training.
        with run_dir.run_lock(out, "--resume" if args.resume else "--output-dir"):
            if args.resume:
                print(f"resuming {out} after epoch {run_dir.completed_epochs(out)} of {config.train.epochs}",
                      file=sys.stderr)
            elif args.overwrite:
                run_dir.clear(out)
            else:
                check_output_dir(out, False, make_parents=args.output_dir is None)   # again, now locked
            metrics = train.train_and_evaluate(config, out, data,
                                               verbose=0 if args.quiet else 2 if args.verbose else 1,
                                               start=train.Start.resuming(bool(args.resume)))
        exported = None
        if args.export:
            exported = export.export_run(out, args.export, args.export_name, base_dir=args.export_base_dir,
                                         data=data)
            print(f"exported {exported}", file=sys.stderr)
        if not args.quiet:
            print(summary(metrics, out, exported), file=sys.stderr)
        if args.json or not console.stdout_is_terminal():
            print(json.dumps({"best": metrics["best"], "final": metrics["final"],
                              "seconds_per_epoch": round(metrics["seconds_per_epoch"], 3)}, indent=2))
        return 0
    return exits.run(run)


if __name__ == "__main__":
    sys.exit(main())
