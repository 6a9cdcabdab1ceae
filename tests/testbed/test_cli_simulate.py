"""The command without root: a clear refusal, `--simulate` showing the decisions, `check`."""

from __future__ import annotations

import argparse
import os

import pytest

from services.testbed import cli
from services.testbed.scenario import Decider


def test_run_without_root_refuses_and_offers_simulate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err
    assert "--simulate" in err


def test_down_without_root_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["down"]) == 2
    assert "needs root" in capsys.readouterr().err


@pytest.mark.parametrize("decider", ["soap", "nsa"])
def test_figure7_simulated_moves_the_stream_as_the_paper_says(
    decider: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # --simulate needs no root
    assert cli.main(["run", "--simulate", "--decider", decider]) == 0
    out = capsys.readouterr().out
    eth1 = "stream at the HA -> BID 2 (eth1); ACKs at the MR -> BID 2 (eth1)"
    eth0 = "stream at the HA -> BID 1 (eth0); ACKs at the MR -> BID 1 (eth0)"
    order = [out.index(eth0), out.index(eth1)]
    assert order[0] < order[1]
    assert out.rindex(eth0) > out.rindex(eth1)  # back on eth0 at the end
    assert "0 condition(s) would not hold" in out
    if decider == "nsa":
        assert "trigger link-state BID 2 (eth1 down)" in out
        assert "-> ha1" in out
        assert "-> mr1" in out
    else:
        assert "SOAP -> ha1 v1 install: http -> BID 2 (fallbacks 1): applied" in out


def test_radio_simulated_moves_on_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--simulate", "--scenario", "radio"]) == 0
    out = capsys.readouterr().out
    assert "min-bandwidth" in out
    assert "0 condition(s) would not hold" in out


def test_radio_cannot_use_the_soap_stub(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--simulate", "--scenario", "radio", "--decider", "soap"]) == 2
    assert "does not run with the soap decider" in capsys.readouterr().out


def test_check_reports_ok_and_problems(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "figure7"]) == 0
    assert "OK (scenario figure7" in capsys.readouterr().out
    assert cli.main(["check", "no-such"]) == 2
    assert "no scenario named" in capsys.readouterr().err


def test_the_subcommand_hangs_under_multinet() -> None:
    parser = argparse.ArgumentParser(prog="multinet")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_subcommand(sub)
    args = parser.parse_args(["testbed", "run", "--scenario", "radio", "--simulate"])
    assert args.func(args) == 0


def test_decider_choice() -> None:
    from services.testbed.runner import DeciderError, choose_decider
    from services.testbed.scenario import load

    figure7, _ = load("figure7")
    radio, _ = load("radio")
    assert choose_decider(figure7, None) is Decider.NSA
    assert choose_decider(figure7, Decider.SOAP) is Decider.SOAP
    assert choose_decider(radio, None) is Decider.NSA
    with pytest.raises(DeciderError, match="radio does not run with --decider soap"):
        choose_decider(radio, Decider.SOAP)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--console", "--simulate"], "drop --simulate"),
        (["--console-hold", "-1"], "expected seconds >= 0"),
        (["--console-listen", "localhost"], "expected HOST:PORT"),
        (["--console-listen", "127.0.0.1:0"], "name a port"),
    ],
)
def test_console_options_that_cannot_work_are_refused(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", *argv]) == 2
    assert says in capsys.readouterr().err
