"""The README's Python examples run as written on a fresh install (no assets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_readme_has_python_examples():
    assert SNIPPETS


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_python_example_runs(snippet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, str(README), "exec"), {"__name__": "readme"})


def _synopsis() -> dict[str, set[str]]:
    """Options per command in the README's CLI synopsis (the first ``sh`` block under ``## CLI``;
    continuation lines are indented, ``#`` starts a comment); the group's own under ``""``."""
    block = re.search(r"^## CLI\n.*?^```sh\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE).group(1)
    commands: dict[str, set[str]] = {}
    name = ""
    for line in block.splitlines():
        text = line.split("#", 1)[0]
        if not line.startswith(" "):
            words = text.split()
            assert words[0] == "zsq-onnx", line
            name = words[1] if not words[1].startswith(("-", "[")) else ""
            commands.setdefault(name, set())
        commands[name] |= set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", text))
    return commands


def _click_options(command) -> list[tuple[str, ...]]:
    """Each option of a click command as its spellings: the flag and its aliases, and for an
    on/off flag also its off spellings as a second entry (both must be documented)."""
    import click

    spellings = []
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            spellings += [tuple(opts) for opts in (param.opts, param.secondary_opts) if opts]
    return spellings


def test_cli_synopsis_lists_every_option_of_every_command_and_no_other():
    from zsq_onnx.cli import main

    documented = _synopsis()
    actual = {"": _click_options(main), **{name: _click_options(command) for name, command in main.commands.items()}}
    assert set(documented) == set(actual)
    for name, options in actual.items():
        missing = [max(spellings, key=len) for spellings in options if not documented[name] & set(spellings)]
        unknown = documented[name] - {flag for spellings in options for flag in spellings}
        assert not missing and not unknown, f"zsq-onnx {name}: missing in the README's synopsis {missing}, not an option of click's {sorted(unknown)}"
