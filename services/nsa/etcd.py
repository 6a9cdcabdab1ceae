"""A small synchronous etcd v3 client over etcd's JSON gateway (`/v3/...`, HTTP POST).

Why not a client library: the maintained Python client for etcd v3 (`aetcd`) is asyncio and
brings gRPC (a large compiled dependency), while the NSA's shell is threads; the older
synchronous clients (`etcd3`, `python-etcd3`) are unmaintained. The NSA needs a handful of
calls (grant, keep alive, revoke a lease; create a key if absent, delete it if it holds a
value, range a prefix, put and delete),
which etcd itself serves as JSON on its client port since 3.3 (Debian's `etcd-server` 3.4
included), so this speaks them with the standard library's `http.client`: one persistent
connection per client, keys and values base64 as the gateway wants, every answer checked.

Failures (etcd down, a refused request, an answer of the wrong shape) raise `EtcdError`; the
caller (`services.nsa.leases`) treats it as "cannot prove my leases" and stops deciding when
its leases' time runs out.
"""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class EtcdError(Exception):
    """etcd could not be reached or refused a request."""


@dataclass(frozen=True)
class Entry:
    """One key as ranged: its value, the revision that created it, and its lease (0: none)."""

    key: str
    value: str
    create_revision: int
    lease: int


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _text(data: str) -> str:
    return base64.b64decode(data).decode("utf-8")


def _prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with `prefix` (its last byte plus one)."""
    raw = prefix.encode("utf-8")
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode("ascii")


class Etcd:
    """One connection to etcd's JSON gateway; not thread-safe (one per thread)."""

    def __init__(self, url: str, *, timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an etcd URL: {url!r}")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or 2379
        self._https = parts.scheme == "https"
        self._timeout = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode("utf-8")
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            if self._connection is None:
                kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                self._connection = kind(self._host, self._port, timeout=self._timeout)
            try:
                self._connection.request(
                    "POST", path, payload, {"Content-Type": "application/json"}
                )
                response = self._connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 1:
                    raise EtcdError(f"etcd at {self.url}: {path}: {exc!r}") from exc
                continue
            if response.status != 200:
                raise EtcdError(
                    f"etcd at {self.url}: {path}: HTTP {response.status}: {data[:200]!r}"
                )
            try:
                answer = json.loads(data)
            except ValueError as exc:
                raise EtcdError(f"etcd at {self.url}: {path}: not JSON: {data[:200]!r}") from exc
            if not isinstance(answer, dict):
                raise EtcdError(f"etcd at {self.url}: {path}: not an object: {data[:200]!r}")
            return answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop the connection (the next call opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # leases -------------------------------------------------------------------------------
    def grant(self, ttl_s: int) -> tuple[int, int]:
        """A new lease: its id and the TTL etcd granted (it may raise a too short one)."""
        answer = self._post("/v3/lease/grant", {"TTL": ttl_s})
        try:
            return int(answer["ID"]), int(answer["TTL"])
        except (KeyError, ValueError) as exc:
            raise EtcdError(f"etcd at {self.url}: a grant without an id: {answer}") from exc

    def keepalive(self, lease: int) -> int:
        """Renew a lease; the TTL it has again, 0 when it has expired or was revoked."""
        answer = self._post("/v3/lease/keepalive", {"ID": str(lease)})
        result = answer.get("result", {})
        return int(result.get("TTL", 0)) if isinstance(result, dict) else 0

    def revoke(self, lease: int) -> None:
        """End a lease now: its keys are deleted (a lease already gone is no error)."""
        try:
            self._post("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    # keys ---------------------------------------------------------------------------------
    def create(self, key: str, value: str, lease: int) -> int | None:
        """Put `key` only if it does not exist; the revision that created it, or None when
        it exists (another replica holds it)."""
        k = _b64(key)
        answer = self._post(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "target": "CREATE", "create_revision": "0"}],
                "success": [{"requestPut": {"key": k, "value": _b64(value), "lease": str(lease)}}],
            },
        )
        if not answer.get("succeeded"):
            return None
        return int(answer["header"]["revision"])

    def delete_if(self, key: str, value: str) -> bool:
        """Delete `key` only while it holds `value` (a partition handed over by its holder,
        never one another replica has taken since); whether it was deleted."""
        k = _b64(key)
        answer = self._post(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "target": "VALUE", "value": _b64(value)}],
                "success": [{"requestDeleteRange": {"key": k}}],
            },
        )
        return bool(answer.get("succeeded"))

    def put(self, key: str, value: str, lease: int = 0) -> None:
        """Put `key` (attached to `lease` when not 0)."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self._post("/v3/kv/put", body)

    def delete(self, key: str) -> None:
        """Delete `key` (a missing key is no error)."""
        self._post("/v3/kv/deleterange", {"key": _b64(key)})

    def range(self, prefix: str) -> list[Entry]:
        """Every key starting with `prefix`."""
        answer = self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        found = []
        for kv in answer.get("kvs", ()):
            found.append(
                Entry(
                    key=_text(kv["key"]),
                    value=_text(kv.get("value", "")),
                    create_revision=int(kv.get("create_revision", 0)),
                    lease=int(kv.get("lease", 0)),
                )
            )
        return found
