"""`multinet console`: help that helps, settings checked before anything starts, a hash."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from services.cli import main
from services.soap_gateway.passwords import PasswordHash

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "console.toml"


def test_run_help_says_what_it_reads_and_serves(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["console", "run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out
    assert "read-only" in out
    assert "[console]" in out


def test_the_example_settings_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "run", "--config", str(EXAMPLE), "--check"]) == 0
    assert "OK (console, 2 users, on 127.0.0.1:8080)" in capsys.readouterr().out
    assert main(["check-config", str(EXAMPLE)]) == 0


def test_bad_settings_name_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "console.toml"
    bad.write_text('[console]\nlisten = "nowhere"\n[console.users.a]\npassword_hash = "x"\n')
    assert main(["console", "run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "console.listen" in err
    assert "console.users.a.password_hash" in err


def test_hash_password_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["console", "hash-password"]) == 0
    digest = PasswordHash.parse(capsys.readouterr().out.strip())
    assert digest.matches(b"s3cret")


def test_a_port_in_use_stops_the_start_with_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "console.toml"
        config.write_text(
            EXAMPLE.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"), encoding="utf-8"
        )
        assert main(["console", "run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve the console on 127.0.0.1:{port}" in err
    assert "in use" in err


def test_a_budget_alert_share_outside_0_to_1_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "budget_alert_share = 0.8" in text
    bad = tmp_path / "console.toml"
    bad.write_text(text.replace("budget_alert_share = 0.8", "budget_alert_share = 1.5"))
    assert main(["console", "run", "--config", str(bad), "--check"]) == 2
    assert "console.budget_alert_share" in capsys.readouterr().err
