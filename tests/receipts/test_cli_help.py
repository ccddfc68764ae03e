"""Every subcommand's help says what it does and ends with an example that parses."""

import shlex

import pytest

from receipts import cli

SUBCOMMANDS = ("proxy", "env", "sql", "show", "list", "tail", "ingest", "verify", "doctor", "audit", "export",
               "ship", "lake", "completion", "serve")  # (written here, not read from the code under test)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_help_ends_with_an_example_that_parses(name, capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args([name, "--help"])
    text = capsys.readouterr().out
    assert text.rstrip().splitlines()[-2] == "example:", text
    example = text.rstrip().splitlines()[-1].strip()
    words = shlex.split(example.split("  #")[0])
    while words and "=" in words[0] and not words[0].startswith("receipts"):  # (VAR=value before the command)
        words.pop(0)
    if name in ("env", "completion"):  # (eval "$(receipts …)": the command inside)
        words = shlex.split(words[1].removeprefix("$(").removesuffix(")")) if name == "completion" else ["receipts", "env"]
    assert words[0] == "receipts" and words[1] == name, example
    args = cli.parser().parse_args(words[1:])
    assert args.func.__name__ == f"cmd_{name}"
