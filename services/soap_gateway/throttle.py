"""Failed logins, remembered per source address, so that wrong passwords cannot hold the CPU.

Each password check costs a deliberately slow PBKDF2 (`passwords.DEFAULT_ITERATIONS`). Without a
limit, anyone who can reach the gateway could keep its cores busy with wrong passwords. So:

- an address with `max_failures` failed logins within `window_s` is refused at once, with no
  password check, until the oldest of them is `window_s` old (HTTP 429 and Retry-After);
- the exact credentials of a recent failure are remembered (as an HMAC only), so sending the
  same wrong password again costs a dictionary lookup, not a PBKDF2;
- both tables are bounded: the least recently failed entries are forgotten first.

A caller whose password was verified before is recognised without a password check and is
never throttled (`Authenticator`), so an attacker sharing its address cannot lock it out.
Pure bookkeeping: time is an argument.
"""

from __future__ import annotations

from collections import OrderedDict, deque

DEFAULT_MAX_FAILURES = 5
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_ADDRESSES = 10_000
DEFAULT_MAX_REMEMBERED = 4096


class LoginThrottle:
    """Recent failed logins per address, and recently failed credentials."""

    def __init__(
        self,
        *,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_s: float = DEFAULT_WINDOW_S,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        max_remembered: int = DEFAULT_MAX_REMEMBERED,
    ) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures >= 1 and window_s > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.max_remembered = max_remembered
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._remembered: OrderedDict[bytes, float] = OrderedDict()

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until `address` may try a password again; None when it may now."""
        times = self._recent(address, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(0.0, times[0] + self.window_s - now)

    def failed(self, address: str, token: bytes, now: float) -> None:
        """Record a failed login from `address` with credentials whose HMAC is `token`."""
        times = self._recent(address, now) or deque(maxlen=self.max_failures)
        times.append(now)
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        self._remembered[token] = now
        self._remembered.move_to_end(token)
        while len(self._remembered) > self.max_remembered:
            self._remembered.popitem(last=False)

    def known_failure(self, token: bytes, now: float) -> bool:
        """Whether these exact credentials failed within the window."""
        when = self._remembered.get(token)
        if when is None:
            return False
        if now - when > self.window_s:
            del self._remembered[token]
            return False
        return True

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times
