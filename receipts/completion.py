"""Shell completion, written from the command-line parser itself (so it never drifts from the commands):
`receipts completion bash|zsh|fish` prints a script to source. It completes the commands, their flags,
and the values of flags that take a fixed set (`--status`, `--format`, `--view`, `--intercept`, …)."""

from __future__ import annotations

import argparse
import shlex


def commands(parser: argparse.ArgumentParser) -> dict[str, dict[str, list[str]]]:
    """command -> flag -> the values it takes (empty: free text)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, p in sub.choices.items():
        flags = {}
        for action in p._actions:
            for flag in action.option_strings:
                if flag.startswith("--"):
                    flags[flag] = [str(c) for c in action.choices] if action.choices else []
        out[name] = flags
    return out


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    table = commands(parser)
    if shell == "fish":
        return _fish(table)
    return _bash(table, zsh=shell == "zsh")


def _bash(table: dict, zsh: bool) -> str:
    cases = []
    for cmd, flags in table.items():
        values = "".join(
            f'            {flag}) COMPREPLY=($(compgen -W {shlex.quote(" ".join(v))} -- "$cur")); return;;\n'
            for flag, v in flags.items()
            if v
        )
        cases.append(
            f'        {cmd})\n          case "$prev" in\n{values}          esac\n'
            f'          COMPREPLY=($(compgen -W {shlex.quote(" ".join(flags))} -- "$cur"));;\n'
        )
    head = "autoload -U +X bashcompinit && bashcompinit\n" if zsh else ""
    return (
        f'# receipts completion ({"zsh" if zsh else "bash"}): eval "$(receipts completion {"zsh" if zsh else "bash"})"\n'
        + head
        + "_receipts() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"\n'
        '    if [ "$COMP_CWORD" -eq 1 ]; then\n'
        f'        COMPREPLY=($(compgen -W {shlex.quote(" ".join([*table, "--version", "--help"]))} -- "$cur")); return\n'
        "    fi\n"
        '    case "${COMP_WORDS[1]}" in\n' + "".join(cases) + "    esac\n}\n"
        "complete -o default -F _receipts receipts\n"
    )


def _fish(table: dict) -> str:
    lines = ["# receipts completion (fish): receipts completion fish | source", "complete -c receipts -f"]
    for cmd in table:
        lines.append(f"complete -c receipts -n __fish_use_subcommand -a {shlex.quote(cmd)}")
    for cmd, flags in table.items():
        for flag, values in flags.items():
            extra = f" -xa {shlex.quote(' '.join(values))}" if values else ""
            lines.append(
                f"complete -c receipts -n {shlex.quote('__fish_seen_subcommand_from ' + cmd)} -l {flag[2:]}{extra}"
            )
    return "\n".join(lines) + "\n"
