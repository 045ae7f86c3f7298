"""The CLI dispatcher: help, exit codes, option generation, error lines."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field

from cdseg.cli import main as cli_main
from cdseg.cli.command import Command
from cdseg.config import Section
from cdseg.errors import DataError


class EchoConfig(Section):
    count: int = Field(1, ge=1, description="how many")
    loud: bool = Field(False, description="shout")


CALLS: list[EchoConfig] = []


def _run(cfg: EchoConfig) -> int:
    CALLS.append(cfg)
    if cfg.count == 13:
        raise DataError("scene top_potsdam_2_10 has no label; add 5_Labels_all/top_potsdam_2_10_label.tif")
    if cfg.count == 14:
        raise RuntimeError("boom")
    return 0


@pytest.fixture()
def echo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli_main.REGISTRY, "echo", ("x", "echo"))
    monkeypatch.setattr(cli_main, "_load_command", lambda path: Command("echo", "echo", EchoConfig, _run))
    CALLS.clear()


def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("synth", "prepare", "train", "test", "report", "pipeline run", "launch", "demo", "bench train"):
        assert command in out


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main([]) == 2
    assert cli_main.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_options_reach_the_command(echo: None) -> None:
    assert cli_main.main(["echo", "--count", "3", "--loud"]) == 0
    assert CALLS[-1].count == 3 and CALLS[-1].loud is True


def test_bad_value_is_exit_2_one_line(echo: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["echo", "--count", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--count" in err


def test_unknown_flag_is_exit_2(echo: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["echo", "--cuont", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments: --cuont" in err and err.count("\n") == 0


def test_user_error_is_exit_2(echo: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["echo", "--count", "13"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("cdseg echo: error: scene top_potsdam_2_10 has no label; "
                   "add 5_Labels_all/top_potsdam_2_10_label.tif")


def test_internal_error_is_exit_1(echo: None) -> None:
    assert cli_main.main(["echo", "--count", "14"]) == 1


def test_env_vars(echo: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSEG_COUNT", "5")
    assert cli_main.main(["echo"]) == 0
    assert CALLS[-1].count == 5


def test_every_registered_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` works on every command whose module exists (all of them once the project is complete)."""
    missing = []
    for path, (module, _) in cli_main.REGISTRY.items():
        try:
            __import__(module)
        except ModuleNotFoundError:
            missing.append(path)
            continue
        code = cli_main.main([*path.split(), "--help"])
        out = capsys.readouterr()
        assert code == 0, f"cdseg {path} --help failed: {out.err[-500:]}"
        assert "--log-format" in out.out
    assert not missing, f"commands without a module: {missing}"


def test_help_through_the_installed_entry_point() -> None:
    """One real process, as a user types it (the loop above runs in-process to stay fast)."""
    proc = subprocess.run([sys.executable, "-m", "cdseg", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "--log-format" in proc.stdout


def test_bad_log_settings_are_exit_2(echo: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CDSEG_LOG_FORMAT", "xml")
    assert cli_main.main(["echo"]) == 2
    assert "CDSEG_LOG_FORMAT" in capsys.readouterr().err
    monkeypatch.delenv("CDSEG_LOG_FORMAT")
    assert cli_main.main(["echo", "--log-level", "chatty"]) == 2


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    import cdseg

    assert cli_main.main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"cdseg {cdseg.__version__}"
    # defined once: pyproject reads cdseg.__version__, so the installed metadata says the same
    assert version("cdseg") == cdseg.__version__
