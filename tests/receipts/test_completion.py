"""`receipts completion`: a script from the parser itself, run by a real bash."""
import subprocess

from support.proc import BIN


def _complete(*words: str) -> list[str]:
    script = subprocess.run([str(BIN / "receipts"), "completion", "bash"], capture_output=True, text=True).stdout
    line = " ".join(words)
    probe = (f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _receipts; '
             'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completes_commands_flags_and_their_values():
    assert _complete("receipts", "li") == ["list"]
    assert {"proxy", "env", "show", "serve", "completion"} <= set(_complete("receipts", "''"))
    assert _complete("receipts", "list", "--st") == ["--status"]
    assert _complete("receipts", "list", "--status", "r") == ["retried", "refunded", "risky"]
    assert _complete("receipts", "proxy", "--intercept", "''") == ["known", "all"]
    assert "--reverse" in _complete("receipts", "proxy", "--re")


def test_fish_gets_the_same_commands():
    fish = subprocess.run([str(BIN / "receipts"), "completion", "fish"], capture_output=True, text=True).stdout
    assert "complete -c receipts -n __fish_use_subcommand -a list" in fish
    assert "-l status -xa 'unpaid pending passed failed off_chain retried refunded risky'" in fish
