"""The one error a Mobility Header decode can raise, and the counters of why decodes failed.

Signalling arrives from the network, so malformed input is expected and must never stop the
service: the caller catches `MobilityHeaderError`, counts it and drops the packet. The fields
say where and why, so a capture can be matched to a log line without re-parsing the message.
"""

from __future__ import annotations

import threading
from enum import StrEnum

from services.contracts.errors import MultinetError


class Reason(StrEnum):
    """Why a Mobility Header was refused; also the key of the decode counters."""

    #: Fewer bytes than the header or the header length field promises.
    TRUNCATED = "truncated"
    #: The buffer length is not a multiple of 8 octets (RFC 6275 6.1.1).
    NOT_MULTIPLE_OF_8 = "not_multiple_of_8"
    #: The header length field disagrees with the number of bytes received.
    LENGTH_MISMATCH = "length_mismatch"
    #: The header length is too small for the fixed part of this message type.
    MESSAGE_TOO_SHORT = "message_too_short"
    #: An option's length runs past the end of the message.
    OPTION_OVERRUN = "option_overrun"
    #: A known option with a length its format does not allow.
    BAD_OPTION_LENGTH = "bad_option_length"
    #: A field holding a value its format does not allow (a prefix length over 128).
    INVALID_FIELD = "invalid_field"
    #: A message type this codec does not handle (only BU, BA and BE are).
    UNSUPPORTED_TYPE = "unsupported_type"


class MobilityHeaderError(MultinetError):
    """A Mobility Header that cannot be decoded: `reason`, byte `offset`, and the MH type."""

    def __init__(self, reason: Reason, *, offset: int, mh_type: int | None, detail: str) -> None:
        self.reason = reason
        self.offset = offset
        self.mh_type = mh_type
        self.detail = detail
        kind = f"MH type {mh_type}" if mh_type is not None else "Mobility Header"
        super().__init__(f"{kind}, offset {offset}: {reason.value}: {detail}")


class DecodeStats:
    """Counts of decoded messages and of refusals per reason, since start or the last reset.

    One process-wide instance (`DECODE_STATS`) is updated by `decode`, so the service can
    publish how much malformed signalling it sees without wrapping every call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decoded = 0
        self.errors: dict[Reason, int] = dict.fromkeys(Reason, 0)

    def count_error(self, reason: Reason) -> None:
        with self._lock:
            self.errors[reason] += 1

    def count_decoded(self) -> None:
        # Unlocked on purpose: it is on the hot path, and a lost increment under a
        # concurrent decode only makes a statistic one short.
        self.decoded += 1

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def snapshot(self) -> dict[str, int]:
        """A copy suitable for a status message: `decoded` plus one key per reason."""
        with self._lock:
            counts = {reason.value: n for reason, n in self.errors.items()}
        return {"decoded": self.decoded, **counts}

    def reset(self) -> None:
        with self._lock:
            self.decoded = 0
            self.errors = dict.fromkeys(Reason, 0)


#: The counters `decode` updates.
DECODE_STATS = DecodeStats()
