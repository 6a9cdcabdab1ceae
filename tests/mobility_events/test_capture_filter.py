"""The capture's kernel filter is what libpcap compiles from its expression, plus an exact
ethertype test libpcap cannot express on a raw-IP socket (tcpdump, Debian's package, compiles).

Its behaviour on real packets is in test_capture_kernel.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from services.mobility_events import capture

Instruction = tuple[int, int, int, int]
_BPF_RET = 0x06


def libpcap_program(expression: str) -> list[Instruction]:
    """`expression` compiled by libpcap for raw IP (no link header, as a SOCK_DGRAM packet
    socket delivers), keeping the bytes the capture reads, as (code, jt, jf, k)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run this test: tcpdump is missing (scripts/setup.sh installs it)")
        pytest.skip("tcpdump is not installed (Debian package tcpdump)")
    result = subprocess.run(
        [tcpdump, "-y", "RAW", "-s", str(capture._BUFSIZE), "-ddd", expression],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    count, *lines = result.stdout.splitlines()
    program: list[Instruction] = []
    for line in lines:
        code, jt, jf, k = (int(field) for field in line.split())
        program.append((code, jt, jf, k))
    assert len(program) == int(count)
    return program


def test_past_the_ethertype_test_the_filter_is_its_expression_compiled_by_libpcap() -> None:
    assert list(capture._FILTER[2:]) == libpcap_program(capture._FILTER_EXPRESSION)


def test_the_ethertype_test_passes_ipv6_on_and_drops_the_rest() -> None:
    load, jump = capture._FILTER[:2]
    assert load == (0x20, 0, 0, capture._SKF_AD_PROTOCOL)  # ld #proto
    code, jt, jf, k = jump
    assert (code, jt, k) == (0x15, 0, capture._ETH_P_IPV6)  # jeq #0x86dd ? next
    # ... : the program's last instruction, which drops (returns 0 bytes).
    assert 1 + 1 + jf == len(capture._FILTER) - 1
    assert capture._FILTER[-1] == (_BPF_RET, 0, 0, 0)


def test_the_filter_keeps_what_the_capture_reads() -> None:
    accepts = [k for code, _, _, k in capture._FILTER if code == _BPF_RET and k]
    assert accepts == [capture._BUFSIZE]
