"""The command line refuses bad invocations with a clear message and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "prem-ha.toml"


def test_help_lists_the_services(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "check-config" in out
    assert "prem" in out


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["prem", "run", "--config", str(tmp_path / "none.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_unknown_namespace_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["prem", "run", "--config", str(EXAMPLE), "--netns", "no-such-ns-x1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_check_config_validates_a_policy_document(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from services.contracts import policy_xml
    from services.contracts.policy import Flush, PolicyMessage

    doc = tmp_path / "p.xml"
    doc.write_bytes(
        policy_xml.render(
            PolicyMessage(
                node="ha1", mobile_router="mr1", direction="downlink", version=3, operation=Flush()
            )
        )
    )
    assert main(["check-config", str(doc)]) == 0
    assert "valid policy document for node ha1, version 3" in capsys.readouterr().out
    doc.write_bytes(b"<x/>")
    assert main(["check-config", str(doc)]) == 2
