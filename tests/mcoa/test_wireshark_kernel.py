"""Wireshark (tshark, Debian's package) decodes our Binding Updates and Acknowledgements, the
pipe-kind option included, as valid Mobility Header messages.

The accepted exchange is captured from the real agents on the HA's links; the refusal (a kind
the HA does not offer, which this kernel cannot show for real when it has one kind only) is
the HA's own decision encoded by the codec and written to a pcap file.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
import time
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from services.mcoa.cache import decide
from services.mobility_header import pipe_option
from services.mobility_header.codec import encode
from tests.mcoa.factories import COA1, HA, bu, ha_settings
from tests.mcoa.lab import McoaLab

pytestmark = pytest.mark.kernel

_LINKTYPE_RAW = 101
_FIELDS = ("mip6.mhtype", "mip6.vsm.vendorId", "mip6.vsm.subtype", "_ws.malformed", "_ws.expert")


@pytest.fixture
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run this test: tshark is missing (scripts/setup.sh installs it)")
        pytest.skip("tshark is not installed (Debian package tshark)")
    return path


def _decode(tshark: str, pcap: Path) -> list[dict[str, str]]:
    """One dict per Mobility Header packet: its type, our option's fields, any error."""
    argv = [tshark, "-r", str(pcap), "-Y", "mipv6", "-T", "fields", "-E", "separator=|"]
    for field in _FIELDS:
        argv += ["-e", field]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [dict(zip(_FIELDS, line.split("|"), strict=True)) for line in out.splitlines()]


def _assert_valid(rows: list[dict[str, str]]) -> None:
    assert rows, "tshark saw no Mobility Header packet"
    for row in rows:
        assert not row["_ws.malformed"], row
        assert not row["_ws.expert"], row


def test_captured_registration_decodes_with_the_pipe_kind_option(
    tshark: str, mcoa_lab: McoaLab, tmp_path: Path
) -> None:
    lab = mcoa_lab
    pcap = tmp_path / "mh.pcap"
    interfaces = ["-i", "h1", "-i", "h2", "-f", "ip6 proto 135"]
    capture = subprocess.Popen(
        ["ip", "netns", "exec", lab.ha, tshark, *interfaces, "-w", str(pcap)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert capture.stderr is not None
        started = time.monotonic()
        seen = ""
        while "Capturing on" not in seen and time.monotonic() - started < 15:
            seen += capture.stderr.readline()
        assert "Capturing on" in seen, seen
        lab.start("ha")
        lab.wait("HA serving", lambda: "serving on" in lab.log("ha"), 10)
        lab.start("mr")
        lab.wait("both BAs", lambda: lab.log("mr").count("status 0 (Binding") >= 2, 10)
        time.sleep(0.3)  # the last BA reaches the capture file
    finally:
        capture.terminate()
        capture.wait(timeout=10)
    rows = _decode(tshark, pcap)
    _assert_valid(rows)
    kinds = {(row["mip6.mhtype"], row["mip6.vsm.subtype"]) for row in rows}
    assert ("5", "1") in kinds, rows  # a BU naming its kind
    assert ("6", "1") in kinds, rows  # a BA confirming it
    assert {row["mip6.vsm.vendorId"] for row in rows} == {str(pipe_option.VENDOR_ID)}


def _ipv6(src: IPv6Address, dst: IPv6Address, payload: bytes) -> bytes:
    header = struct.pack("!IHBB", 6 << 28, len(payload), 135, 64)
    return header + src.packed + dst.packed + payload


def test_a_refusal_naming_the_offered_kinds_decodes(tshark: str, tmp_path: Path) -> None:
    request = bu(1)
    request = dataclasses.replace(
        request, options=(*request.options, pipe_option.kind_option("vxlan"))
    )
    refusal = decide(ha_settings(), {}, request, COA1, now=0, offered=("ip6tnl", "seg6"))
    assert refusal.ack is not None
    packets = [
        _ipv6(COA1, HA, encode(request, src=COA1, dst=HA)),
        _ipv6(HA, COA1, encode(refusal.ack, src=HA, dst=COA1)),
    ]
    pcap = tmp_path / "refusal.pcap"
    with pcap.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, _LINKTYPE_RAW))
        for packet in packets:
            out.write(struct.pack("<IIII", int(time.time()), 0, len(packet), len(packet)))
            out.write(packet)
    rows = _decode(tshark, pcap)
    _assert_valid(rows)
    assert [(r["mip6.mhtype"], r["mip6.vsm.subtype"]) for r in rows] == [("5", "1"), ("6", "2")]
