"""The README stays true: its model table is the registry's, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _setup_commands() -> list[str]:
    section = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_test_command():
    commands = _setup_commands()
    assert len(commands) == 2, commands
    main_job, test_command = commands
    assert "pip install" in main_job and "tools/train.py" in main_job and "tools/infer.py" in main_job
    assert "pip install" in test_command and "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.strip() in ci, "the CI script must run the README's test command verbatim"


def test_model_table_is_generated_from_the_registry():
    from vision.cli.main import markdown_table

    assert markdown_table() in README, "regenerate the README table: python -m vision list --markdown"
