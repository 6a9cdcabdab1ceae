"""Reading a service's /metrics endpoint the way Prometheus does: over HTTP, text format."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import Watched, check_alive


@dataclass(frozen=True)
class Samples:
    """One scrape: every sample by name and labels."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> float | None:
        """The sample `name{labels}` (exactly those labels), or None when absent."""
        return self.values.get((name, frozenset(labels.items())))

    def __getitem__(self, name: str) -> float:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def labelled(self, name: str, **labels: str) -> float:
        """`name{labels}`, which must be present."""
        value = self.get(name, **labels)
        if value is None:
            raise KeyError(f"{name}{labels}")
        return value


def scrape(port: int, host: str = "127.0.0.1", *, timeout_s: float = 5.0) -> Samples:
    """GET http://host:port/metrics and parse it."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as answer:
        text = answer.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Samples(values)


def wait_scrape(
    port: int,
    check: Callable[[Samples], bool],
    *,
    timeout_s: float = 15.0,
    watch: Iterable[Watched] = (),
) -> Samples:
    """Scrape until `check` holds (the endpoint may not be up yet); fail with the last scrape,
    or at once when a process of `watch` (the one serving the metrics) has exited."""
    deadline = time.monotonic() + timeout_s
    last: Samples | None = None
    error: OSError | None = None
    watched = tuple(watch)
    while time.monotonic() < deadline:
        check_alive(watched, f"metrics on port {port}")
        try:
            last = scrape(port)
        except OSError as exc:
            error = exc
        else:
            if check(last):
                return last
        time.sleep(0.05)
    raise AssertionError(
        f"metrics on port {port} never satisfied the check; last error {error}, last scrape "
        f"{None if last is None else sorted(last.values.items(), key=str)}"
    )
