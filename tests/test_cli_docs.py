"""docs/cli.md is the commands' own --help: rendered again from the argparse
parsers and compared, so a flag and its reference cannot disagree."""
import os
from pathlib import Path

from tf_sharpcf.cli import COMMANDS, docs, fit

ROOT = Path(__file__).resolve().parents[1]


def test_docs_cli_md_is_the_commands_current_help():
    written = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == docs.render(), f"docs/cli.md is out of date with the flags: run `{docs.REGENERATE}`"


def test_the_reference_tells_how_to_regenerate_it_at_the_top():
    head = "\n".join(docs.render().splitlines()[:10])
    assert docs.REGENERATE == "python -m tf_sharpcf.cli.docs > docs/cli.md" and docs.REGENERATE in head


def test_a_flag_added_to_a_command_changes_the_reference(monkeypatch):
    """The comparison above is not vacuous: the reference follows the parsers."""
    before = docs.render()
    real = fit.build_parser

    def with_a_new_flag():
        parser = real()
        parser.add_argument("--brand-new-flag", help="added after docs/cli.md was written")
        return parser
    monkeypatch.setattr(fit, "build_parser", with_a_new_flag)
    after = docs.render()
    assert "--brand-new-flag" in after and "added after docs/cli.md was written" in after
    assert after != before


def test_the_reference_is_the_same_at_any_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    wide = docs.render()
    assert os.environ["COLUMNS"] == "200"            # put back after rendering
    monkeypatch.setenv("COLUMNS", "50")
    assert docs.render() == wide
    monkeypatch.delenv("COLUMNS")
    assert docs.render() == wide and "COLUMNS" not in os.environ


def test_every_command_and_subcommand_has_a_section():
    text = docs.render()
    for command in COMMANDS:
        assert f"## `{command}`" in text
    for section in ("export models-config", "analyze curves", "analyze landscape", "analyze longtail",
                    "analyze sensitivity", "parameter_server"):
        assert f"## `{section}`" in text
    assert "usage: python -m tf_sharpcf.fit" in text and "--negatives K" in text and "--json" in text
