"""Per-dataset presets (`presets.py`): each agrees with the pipeline whose
runs it names, and `fit`/`tune` layer defaults < preset < --config < flags."""
import json
from pathlib import Path

import pytest

from tf_sharpcf import methods, presets
from tf_sharpcf.analysis.experiments import load_experiment, plan
from tf_sharpcf.cli import fit as fit_cli
from tf_sharpcf.cli import tune as tune_cli
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_preset_env(monkeypatch):
    """conftest.py sets $TF_SHARPCF_PRESET to none for the other tests."""
    monkeypatch.delenv(presets.ENV, raising=False)


def test_the_environment_sets_the_default_preset(monkeypatch):
    monkeypatch.setenv(presets.ENV, "none")
    assert fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "gowalla"])) == Config()
    monkeypatch.setenv(presets.ENV, "gowala")
    with pytest.raises(ConfigError, match=r"invalid \$TF_SHARPCF_PRESET: 'gowala'"):
        fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "gowalla"]))


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_each_preset_is_its_pipelines_recipe(name):
    """`fit --dataset D --method M` with no other flag builds the Config of the
    pipeline's M run of seed 0, for every method the pipeline runs."""
    preset = presets.PRESETS[name]
    exp = load_experiment(ROOT / preset.source)
    assert exp.dataset == name
    runs = [r for r in plan(exp) if r.seed == 0]
    assert {r.method for r in runs} == {"bpr", "apr", "sharpcf"}
    for run in runs:
        built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(
            ["--dataset", name, "--method", run.method]))
        # a BPR run never reads APR's or SharpCF's fields, which its pipeline leaves at the defaults
        unread = {f: getattr(run.config.train, f) for f in methods.PARTS.unused_fields(run.method)}
        assert built.replace(train=unread) == run.config, \
            f"{name} {run.method}: the preset and {preset.source} disagree"


def test_the_paper_method_is_the_default_run():
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "gowalla"]))
    assert built.train.method == "sharpcf"
    assert (built.train.optimizer, built.train.batch_size, built.train.lr) == ("adagrad", 256, 0.1)


def test_a_folder_gets_the_folder_preset(tmp_path):
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", str(tmp_path)]))
    expected = presets.PRESETS[presets.FOLDER].apply(Config()).replace(data={"dataset": str(tmp_path)})
    assert built == expected
    assert "has no preset of its own" in fit_cli.preset_line(None, str(tmp_path))


def test_none_keeps_the_library_defaults():
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "gowalla", "--preset", "none"]))
    assert built == Config()
    assert "library's defaults" in fit_cli.preset_line("none", "gowalla")


def test_a_named_preset_for_another_dataset():
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(
        ["--dataset", "ml-1m", "--preset", "gowalla"]))
    assert built.data.dataset == "ml-1m" and built.train.optimizer == "adagrad"


def test_flags_override_the_preset():
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(
        ["--dataset", "gowalla", "--lr", "1.5", "--epochs", "7"]))
    assert (built.train.lr, built.train.epochs, built.train.batch_size) == (1.5, 7, 256)


def test_a_partial_config_file_overrides_the_preset_and_flags_override_it(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"l2": 0.02, "epochs": 9}, "eval": {"ks": [5]},
                                "data": {"dataset": "gowalla", "data_dir": "/elsewhere"}}))
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--config", str(path), "--epochs", "11"]))
    assert built.train.l2 == 0.02 and built.train.epochs == 11 and built.eval.ks == (5,)
    assert built.train.optimizer == "adagrad"        # the gowalla preset, under the file
    assert built.data.data_dir is None               # the file's data_dir is not this machine's


def test_another_optimizer_leaves_the_presets_adagrad_accumulator_behind(tmp_path):
    """The gowalla preset's initial accumulator (Adagrad's) returns to the
    default when a flag or file picks another optimizer, and stays an error
    when set explicitly with one."""
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(
        ["--dataset", "gowalla", "--optimizer", "sgd", "--lr", "25.6"]))
    assert (built.train.optimizer, built.train.initial_accumulator) == ("sgd", Config().train.initial_accumulator)
    assert built.train.sampler == "dns"                # the rest of the preset stays
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"optimizer": "lazyadam"}}))
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "gowalla", "--config", str(path)]))
    assert built.train.initial_accumulator == Config().train.initial_accumulator
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "gowalla"]))
    assert built.train.initial_accumulator == 1e-6
    with pytest.raises(ConfigError, match="initial-accumulator"):
        fit_cli.config_from_args(fit_cli.build_parser().parse_args(
            ["--dataset", "gowalla", "--optimizer", "sgd", "--initial-accumulator", "0.5"]))


def test_a_full_config_file_is_taken_whole(tmp_path):
    """A run's config.json (every field) reproduces that run, whatever the preset."""
    stored = Config().replace(data={"dataset": "gowalla"}, train={"lr": 0.004})
    path = tmp_path / "config.json"
    path.write_text(stored.to_json())
    built = fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--config", str(path)]))
    assert built == stored


def test_bad_preset_and_preset_with_resume_are_errors(tmp_path):
    with pytest.raises(SystemExit):
        fit_cli.build_parser().parse_args(["--preset", "nope"])
    with pytest.raises(ConfigError, match="--preset"):
        presets.resolve("nope", "gowalla")
    args = fit_cli.build_parser().parse_args(["--resume", str(tmp_path), "--preset", "gowalla"])
    with pytest.raises(ConfigError, match="invalid --preset: not with --resume"):
        fit_cli.config_from_args(args)


def test_a_bad_config_file_still_names_itself(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"train": {"lr": "fast"}}')
    with pytest.raises(ConfigError, match=r"invalid --config: .*c\.json.*train\.lr"):
        fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--config", str(path)]))


def test_help_lists_what_each_preset_changes():
    text = fit_cli.build_parser().format_help()
    for name, preset in presets.PRESETS.items():
        assert f"{name}: " in text
    assert "optimizer adagrad" in text


def test_tune_keeps_the_defaults_unless_asked_and_then_holds_lr_and_l2():
    args = tune_cli.build_parser().parse_args(["--dataset", "gowalla", "--method", "sharpcf"])
    settings = tune_cli.settings_from_args(args)
    assert settings.base.train.optimizer == Config().train.optimizer
    assert settings.space["lr"].kind != "fixed"
    args = tune_cli.build_parser().parse_args(["--dataset", "gowalla", "--method", "sharpcf", "--preset", "auto"])
    settings = tune_cli.settings_from_args(args)
    assert settings.base.train.optimizer == "adagrad"
    assert settings.space["lr"].kind == "fixed" and settings.space["lr"].values == (0.1,)
    assert settings.space["lambda"].kind != "fixed"      # the method's own are searched
    args = tune_cli.build_parser().parse_args(["--dataset", "gowalla", "--preset", "auto",
                                               "--lr-values", "0.03", "0.1"])
    assert tune_cli.settings_from_args(args).space["lr"].kind == "values"


def test_docs_table_names_what_each_preset_changes():
    rows = {line.split("|")[1].strip(): line for line in (ROOT / "docs" / "presets.md").read_text().splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in presets.PRESETS}
    assert set(rows) == set(presets.PRESETS)
    for name, preset in presets.PRESETS.items():
        assert preset.source in rows[name]
        changed = ", ".join(f"{k} {v}" for k, v in presets.changes(preset).items()) or "nothing"
        assert f"| {changed} |" in rows[name], f"docs/presets.md's {name} row is out of date"


def test_changing_the_sgd_batch_without_the_lr_warns(tmp_path):
    """An SGD recipe from a --config file (a tuned or earlier run) at batch
    256: a flag that changes only the batch warns; one that scales the lr with
    it does not, nor does a batch flag on an Adagrad or LazyAdam preset."""
    path = tmp_path / "sgd.json"
    path.write_text(json.dumps({"train": {"optimizer": "sgd", "batch_size": 256, "lr": 25.6}}))
    with pytest.warns(UserWarning, match=r"--batch-size 64 with the lr 25.6 chosen at batch 256.*--lr 6.4 keeps it"):
        fit_cli.config_from_args(fit_cli.build_parser().parse_args(
            ["--dataset", "gowalla", "--config", str(path), "--batch-size", "64"]))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_cli.config_from_args(fit_cli.build_parser().parse_args(
            ["--dataset", "gowalla", "--config", str(path), "--batch-size", "64", "--lr", "6.4"]))
        fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "gowalla", "--batch-size", "64"]))
        fit_cli.config_from_args(fit_cli.build_parser().parse_args(["--dataset", "ml-1m", "--batch-size", "64"]))
