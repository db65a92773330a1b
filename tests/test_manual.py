"""`pt-engine --man` and `--completion`: written from the same parsers as --help,
so every subcommand and every option of the table is in them."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pt_engine import cli, options


def _pt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pt_engine", *args], capture_output=True,
                          text=True, timeout=60)


def _every_flag() -> set[str]:
    return {flag for opt in options.OPTIONS for flag in opt.flags}


def test_the_manual_has_every_command_and_option():
    proc = _pt("--man")          # not a terminal: the roff source
    assert proc.returncode == 0 and proc.stderr == ""
    page = proc.stdout
    assert page.startswith(".TH PT\\-ENGINE 1 ")
    for command in cli.COMMANDS:
        assert f'.SS "pt\\-engine {command}"' in page, command
    roff_flags = page.replace("\\-", "-")
    missing = [flag for flag in _every_flag() if f"\\fB{flag}\\fR" not in roff_flags]
    assert missing == []
    for section in ("EXIT STATUS", "ENVIRONMENT", "SEE ALSO"):
        assert f".SH {section}" in page


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
def test_the_manual_renders_without_warnings():
    page = _pt("--man").stdout
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=page,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_bash_completion_completes_commands_and_options(tmp_path):
    proc = _pt("--completion", "bash")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "pt-engine.bash"
    script.write_text(proc.stdout)

    def complete(*words: str) -> set[str]:
        line = " ".join(("pt-engine", *words))
        out = subprocess.run(
            ["bash", "-c", f'source {script}; COMP_WORDS=({line}); '
             f'COMP_CWORD={len(words)}; COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; '
             f'_shtab_pt_engine; printf "%s\\n" "${{COMPREPLY[@]}}"'],
            capture_output=True, text=True, timeout=30)
        return set(out.stdout.split())

    assert {"read", "record"} <= complete("re")
    assert {"--filter", "--format"} <= complete("read", "--f")
    assert "--workers" in complete("run", "--w")


def test_zsh_completion_is_a_compdef_script():
    proc = _pt("--completion", "zsh")
    assert proc.returncode == 0 and proc.stdout.startswith("#compdef pt-engine")
    assert "--interval" in proc.stdout and "record" in proc.stdout


def test_an_unknown_shell_is_a_usage_error():
    proc = _pt("--completion", "fish")
    assert proc.returncode == 2 and "invalid choice: 'fish'" in proc.stderr


def test_the_value_of_completion_is_not_taken_for_a_command():
    assert cli._given_command(["--completion", "bash"]) is None
    assert cli._given_command(["--completion", "zsh", "read", "x"]) == "read"
