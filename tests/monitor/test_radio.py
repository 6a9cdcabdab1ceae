"""nl80211 radio readings: the pure parser on messages encoded like the kernel's, the seam to a
stand-in nl80211, and what this machine's kernel (no cfg80211) really answers.

The parser's inputs are real pyroute2 `nl80211cmd` messages, encoded to bytes and decoded again,
so the test goes through pyroute2's own attribute types (it decodes the noise, an s8 sent in a
u8 attribute, as unsigned: 161 on the wire is -95 dBm).
"""

from __future__ import annotations

import errno
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nl80211 import NL80211_NAMES, nl80211cmd

from services import netns
from services.contracts.errors import KernelError
from services.monitor.radio import (
    Nl80211Radio,
    RadioReading,
    RadioUnavailable,
    parse_reading,
)

LO_INDEX = socket.if_nametoindex("lo")


def decoded(cmd: str, attrs: list[list[Any]]) -> Any:
    """A message as it comes out of the socket: encoded, then decoded from the bytes."""
    msg = nl80211cmd()
    msg["cmd"] = NL80211_NAMES[cmd]
    msg["attrs"] = attrs
    msg.encode()
    parsed = nl80211cmd(msg.data)
    parsed.decode()
    return parsed


def station(
    signal: int | None = -61,
    bitrate32: int | None = 5200,
    bitrate16: int | None = None,
    signal_avg: int | None = None,
) -> Any:
    rate = [
        [name, value]
        for name, value in (
            ("NL80211_RATE_INFO_BITRATE", bitrate16),
            ("NL80211_RATE_INFO_BITRATE32", bitrate32),
        )
        if value is not None
    ]
    info: list[list[Any]] = []
    if signal is not None:
        info.append(["NL80211_STA_INFO_SIGNAL", signal])
    if signal_avg is not None:
        info.append(["NL80211_STA_INFO_SIGNAL_AVG", signal_avg])
    if rate:
        info.append(["NL80211_STA_INFO_TX_BITRATE", {"attrs": rate}])
    return decoded(
        "NL80211_CMD_NEW_STATION",
        [["NL80211_ATTR_IFINDEX", 3], ["NL80211_ATTR_STA_INFO", {"attrs": info}]],
    )


def survey(frequency: int, noise_on_wire: int | None, in_use: bool) -> Any:
    info: list[list[Any]] = [["NL80211_SURVEY_INFO_FREQUENCY", frequency]]
    if noise_on_wire is not None:
        info.append(["NL80211_SURVEY_INFO_NOISE", noise_on_wire])
    if in_use:
        info.append(["NL80211_SURVEY_INFO_IN_USE", True])
    return decoded(
        "NL80211_CMD_NEW_SURVEY_RESULTS",
        [["NL80211_ATTR_IFINDEX", 3], ["NL80211_ATTR_SURVEY_INFO", {"attrs": info}]],
    )


SURVEYS = [survey(5180, 160, in_use=False), survey(5200, 161, in_use=True)]


@pytest.mark.parametrize(
    ("stations", "surveys", "expected"),
    [
        ([station()], SURVEYS, RadioReading(-61, -95, 520_000_000)),
        ([station(bitrate32=None, bitrate16=540)], SURVEYS, RadioReading(-61, -95, 54_000_000)),
        ([station(bitrate32=70_000, bitrate16=0)], [], RadioReading(-61, None, 7_000_000_000)),
        ([station(bitrate32=None)], SURVEYS, RadioReading(-61, -95, None)),
        ([station(signal=None, signal_avg=-70)], [], RadioReading(-70, None, 520_000_000)),
        ([station(signal=None)], [], RadioReading(None, None, 520_000_000)),
        ([station(-40), station(-80)], [], RadioReading(-40, None, 520_000_000)),
        ([station()], [survey(5180, 160, in_use=False)], RadioReading(-61, None, 520_000_000)),
        ([station()], [survey(5200, None, in_use=True)], RadioReading(-61, None, 520_000_000)),
        ([], SURVEYS, None),
    ],
    ids=[
        "signal-noise-bitrate32",
        "old-16-bit-bitrate",
        "bitrate32-wins",
        "no-tx-bitrate",
        "average-signal",
        "no-signal",
        "first-station",
        "no-channel-in-use",
        "no-noise",
        "not-associated",
    ],
)
def test_parse_reading(stations: list[Any], surveys: list[Any], expected: RadioReading) -> None:
    assert parse_reading(stations, surveys) == expected


@pytest.mark.parametrize(("wire", "dbm"), [(0, 0), (127, 127), (128, -128), (161, -95), (255, -1)])
def test_noise_is_a_signed_byte(wire: int, dbm: int) -> None:
    reading = parse_reading([station()], [survey(2412, wire, in_use=True)])
    assert reading is not None
    assert reading.noise_dbm == dbm


class FakeIW:
    """Stands in for pyroute2's IW: answers from lists, or raises a NetlinkError per request."""

    def __init__(
        self,
        stations: list[Any] | None = None,
        surveys: list[Any] | None = None,
        errors: dict[str, int] | None = None,
    ) -> None:
        self.stations = stations or []
        self.surveys = surveys or []
        self.errors = errors or {}
        self.asked: list[tuple[str, int]] = []
        self.closed = False

    def _answer(self, what: str, index: int, value: list[Any]) -> list[Any]:
        self.asked.append((what, index))
        if what in self.errors:
            raise NetlinkError(self.errors[what])
        return value

    def get_interface_by_ifindex(self, index: int) -> list[Any]:
        return self._answer("interface", index, [])

    def get_stations(self, index: int) -> list[Any]:
        return self._answer("stations", index, self.stations)

    def survey(self, index: int) -> list[Any]:
        return self._answer("survey", index, self.surveys)

    def close(self) -> None:
        self.closed = True


def radio_on_lo(fake: FakeIW) -> Nl80211Radio:
    return Nl80211Radio("lo", iw_factory=lambda: fake)


def test_read_asks_for_station_and_survey_of_the_interface() -> None:
    fake = FakeIW([station()], SURVEYS)
    radio = radio_on_lo(fake)
    assert radio.read() == RadioReading(-61, -95, 520_000_000)
    assert fake.asked == [("interface", LO_INDEX), ("stations", LO_INDEX), ("survey", LO_INDEX)]
    radio.close()
    assert fake.closed


def test_not_associated_reads_none_without_a_survey() -> None:
    fake = FakeIW([], SURVEYS)
    assert radio_on_lo(fake).read() is None
    assert ("survey", LO_INDEX) not in fake.asked


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.ENODEV])
def test_a_driver_without_survey_gives_no_noise(code: int) -> None:
    radio = radio_on_lo(FakeIW([station()], errors={"survey": code}))
    assert radio.read() == RadioReading(-61, None, 520_000_000)


def test_a_vanished_station_reads_none() -> None:
    assert radio_on_lo(FakeIW(errors={"stations": errno.ENODEV})).read() is None


def test_other_netlink_errors_are_kernel_errors() -> None:
    radio = radio_on_lo(FakeIW(errors={"stations": errno.EPERM}))
    with pytest.raises(KernelError) as caught:
        radio.read()
    assert caught.value.errno == errno.EPERM


def test_a_device_nl80211_does_not_know_is_not_wireless() -> None:
    fake = FakeIW(errors={"interface": errno.ENODEV})
    with pytest.raises(RadioUnavailable) as caught:
        radio_on_lo(fake)
    assert caught.value.kind == "not-wireless"
    assert "lo is not a wireless interface" in str(caught.value)
    assert fake.closed


def test_a_missing_interface_is_refused_before_nl80211_is_opened() -> None:
    opened: list[FakeIW] = []

    def factory() -> FakeIW:
        opened.append(FakeIW())
        return opened[-1]

    with pytest.raises(RadioUnavailable) as caught:
        Nl80211Radio("nosuchwlan0", iw_factory=factory)
    assert caught.value.kind == "no-interface"
    assert opened == []


def expected_kind() -> str:
    """Independent of pyroute2: cfg80211 shows in /sys/module when built in or loaded."""
    return "not-wireless" if Path("/sys/module/cfg80211").exists() else "no-nl80211"


def check_unavailable(interface: str) -> RadioUnavailable:
    with pytest.raises(RadioUnavailable) as caught:
        Nl80211Radio(interface)
    unavailable = caught.value
    assert unavailable.interface == interface
    assert unavailable.kind == expected_kind()
    if unavailable.kind == "no-nl80211":
        assert "cfg80211" in str(unavailable)
        assert unavailable.errno == errno.ENOENT
    return unavailable


def test_the_real_kernel_on_loopback() -> None:
    print(check_unavailable("lo"))


def unavailable_on_veth() -> str:
    subprocess.run(
        ["ip", "link", "add", "wl0", "type", "veth", "peer", "name", "wl0p"],
        check=True,
        capture_output=True,
    )
    return str(check_unavailable("wl0"))


@pytest.mark.kernel
def test_the_real_kernel_on_a_veth(make_netns: Callable[[str], str]) -> None:
    message = netns.call_in(make_netns("radio"), unavailable_on_veth)
    print(message)
    assert "wl0" in message
