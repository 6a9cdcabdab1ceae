"""Radio values of a Wi-Fi access link from nl80211: signal, noise and transmit bit rate.

`parse_reading` turns nl80211 replies into a `RadioReading` and is pure, so it is tested with
messages built byte for byte like the kernel's. `Nl80211Radio` asks the kernel for them: the
station entry of the interface (on a client interface, the access point it is associated with)
for the signal and the transmit bit rate, and the channel survey for the noise of the channel
in use. Machines without cfg80211 (this project's test VM among them) have no nl80211 family
at all; the constructor says so with `RadioUnavailable`, and the monitor falls back to traces.
"""

from __future__ import annotations

import errno as errnos
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pyroute2.iwutil import IW
from pyroute2.netlink.exceptions import NetlinkError

from services.contracts.errors import KernelError, MultinetError

RATE_UNIT_BPS = 100_000  # NL80211_RATE_INFO_BITRATE(32) count in units of 100 kbit/s
# A station or survey that vanished under us: not associated (any more), device gone.
_ABSENT = (errnos.ENODEV, errnos.ENOENT, errnos.ENOLINK, errnos.ENONET)
# Drivers without survey support answer these; the reading then just has no noise.
_NO_SURVEY = (errnos.EOPNOTSUPP, errnos.EINVAL, *_ABSENT)

Unavailability = Literal["no-interface", "no-nl80211", "not-wireless"]


@dataclass(frozen=True, slots=True)
class RadioReading:
    """Radio values read from the driver; None where the driver does not report one."""

    signal_dbm: int | None
    noise_dbm: int | None
    bitrate_bps: int | None


@dataclass
class RadioUnavailable(MultinetError):  # noqa: N818 - the name reads as what happened
    """This interface's radio cannot be read at all; `kind` says why, `reason` in words."""

    interface: str
    kind: Unavailability
    reason: str
    errno: int | None = None

    def __str__(self) -> str:
        return f"no radio readings for {self.interface}: {self.reason}"


def _signed8(value: int) -> int:
    """nl80211 sends the noise as a u8 holding an s8; pyroute2 decodes it unsigned."""
    return value - 256 if value > 127 else value


def _first_station_values(stations: Iterable[Any]) -> tuple[int | None, int | None] | None:
    """(signal dBm, TX bit rate in bit/s) of the first station entry; None if there is none."""
    for station in stations:
        info = station.get_attr("NL80211_ATTR_STA_INFO")
        if info is None:
            continue
        signal = info.get_attr("NL80211_STA_INFO_SIGNAL")
        if signal is None:
            signal = info.get_attr("NL80211_STA_INFO_SIGNAL_AVG")
        return (None if signal is None else int(signal)), _bitrate_of(info)
    return None


def _bitrate_of(info: Any) -> int | None:
    """BITRATE32 when present; the older 16-bit BITRATE overflows above 6.5 Gbit/s."""
    rate = info.get_attr("NL80211_STA_INFO_TX_BITRATE")
    if rate is None:
        return None
    units = rate.get_attr("NL80211_RATE_INFO_BITRATE32")
    if units is None:
        units = rate.get_attr("NL80211_RATE_INFO_BITRATE")
    return None if units is None else int(units) * RATE_UNIT_BPS


def _noise_in_use(surveys: Iterable[Any]) -> int | None:
    """The noise of the channel marked in use; other channels' entries are scan results."""
    for survey in surveys:
        info = survey.get_attr("NL80211_ATTR_SURVEY_INFO")
        if info is None or not info.get_attr("NL80211_SURVEY_INFO_IN_USE"):
            continue
        noise = info.get_attr("NL80211_SURVEY_INFO_NOISE")
        return None if noise is None else _signed8(int(noise))
    return None


def parse_reading(stations: Iterable[Any], surveys: Iterable[Any]) -> RadioReading | None:
    """A reading from GET_STATION and GET_SURVEY dump replies; None without a station."""
    values = _first_station_values(stations)
    if values is None:
        return None
    signal, bitrate = values
    return RadioReading(signal_dbm=signal, noise_dbm=_noise_in_use(surveys), bitrate_bps=bitrate)


def _index_of(interface: str) -> int | None:
    """The ifindex in the current namespace (an ioctl, not /sys); None if there is no such."""
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        return None


def _open_nl80211(interface: str, iw_factory: Callable[[], Any]) -> Any:
    try:
        return iw_factory()
    except NetlinkError as exc:
        if exc.code == errnos.ENOENT:
            reason = (
                "the kernel has no nl80211 generic netlink family "
                "(cfg80211 is not built in or not loaded), so no Wi-Fi device can be read"
            )
        else:
            reason = f"cannot open nl80211: {exc}"
        raise RadioUnavailable(interface, "no-nl80211", reason, exc.code) from exc


def _require_wireless(iw: Any, interface: str, index: int) -> None:
    try:
        iw.get_interface_by_ifindex(index)
    except NetlinkError as exc:
        if exc.code not in (errnos.ENODEV, errnos.EOPNOTSUPP, errnos.EINVAL):
            raise KernelError(f"nl80211 get interface {interface}", str(exc), exc.code) from exc
        reason = f"{interface} is not a wireless interface (nl80211 does not know it)"
        raise RadioUnavailable(interface, "not-wireless", reason, exc.code) from exc


class Nl80211Radio:
    """Reads one Wi-Fi interface's radio values through nl80211.

    Construct it in the thread (and network namespace) that will call `read`: the pyroute2
    socket belongs to the thread that made it. `iw_factory` is the seam tests use to stand in
    for the kernel's nl80211.
    """

    def __init__(self, interface: str, *, iw_factory: Callable[[], Any] = IW) -> None:
        self.interface = interface
        index = _index_of(interface)
        if index is None:
            raise RadioUnavailable(interface, "no-interface", f"no interface named {interface}")
        self._iw = _open_nl80211(interface, iw_factory)
        try:
            _require_wireless(self._iw, interface, index)
        except BaseException:
            self._iw.close()
            raise

    def read(self) -> RadioReading | None:
        """The current values; None while not associated or while the interface is gone.

        The name is resolved again on every read, so a re-created interface is followed.
        """
        index = _index_of(self.interface)
        if index is None:
            return None
        stations = self._dump("station", self._iw.get_stations, index, _ABSENT)
        if not stations:
            return None
        surveys = self._dump("survey", self._iw.survey, index, _NO_SURVEY)
        return parse_reading(stations, surveys)

    def close(self) -> None:
        """Close the nl80211 socket."""
        self._iw.close()

    def _dump(
        self, what: str, fetch: Callable[[int], Iterable[Any]], index: int, empty: tuple[int, ...]
    ) -> list[Any]:
        try:
            return list(fetch(index))
        except NetlinkError as exc:
            if exc.code in empty:
                return []
            raise KernelError(f"nl80211 {what} of {self.interface}", str(exc), exc.code) from exc
