"""The operator console's cost and speed: CPU per bus message, and bus to browser delay.

Part 1, CPU (pure, no broker): a fleet of `--routers` mobile routers with `--links` links
each reporting metrics at 1 Hz, i.e. routers x links messages per second, fed into the
console's picture the way its shell does (decode the JSON, take the lock, `feed`), plus every
`--flap`-th message a link-state change (an alert raised or cleared, a fleet row changed),
and, once a second, the fleet event a stream sends (`Picture.fleet`). Quoted: microseconds
per message (decode + feed, and feed alone), the share of one core the fleet costs at 1 Hz,
the microseconds of one fleet event (medians of `--reps` repetitions of `--seconds`
simulated seconds each); then the memory the picture holds once every link's history is full
(tracemalloc).

Part 2, delay (`--delay`, needs the broker on 127.0.0.1:1883): a console runs for real (bus
and uvicorn), the fleet reports at 1 Hz from another process (as monitors do), each second's
messages in `--slices` even bursts (1: all at once), a client holds a router's event stream,
and a link-state change is published `--count` times; the time from the publish to the event
that shows it is recorded, split into `bus` (publish -> fed to the picture: broker, paho,
decoding, and the queue of fleet messages ahead of it), `wait` (fed -> the stream's event
built: its wake-up and gaps) and `send` (built -> read by the client: JSON, uvicorn, the
socket). Quoted: p50 and p99 of each, and the console process's CPU per fleet message over
the run (its bus thread, web thread and this bench's client).

Part 3, first render (`--render`, needs Debian's chromium and chromium-driver): the console's
web app (uvicorn) over a picture holding the whole fleet, headless Chromium logged in loads
the fleet page `--loads` times; each load's time from the navigation's start to the mark the
page sets once its first fleet event is in the table and drawn (`fleet-rendered`, a
`performance` mark: `performance.timeOrigin` is the navigation's start). Quoted: median and
worst, with every row checked to be in the table.

    .venv/bin/python -m bench.console [--routers 1000] [--links 3] [--seconds 10] [--delay]
        [--count 40] [--slices 10] [--render] [--loads 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
import tracemalloc
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from services.console.core import ConsoleState, Limits
from services.console.picture import FleetCursor, Picture
from services.console.service import decode_message
from services.contracts.messages import LinkMetrics, LinkState, encode
from services.contracts.topics import TopicKind, TopicName, Topics

TECHNOLOGIES: tuple[Literal["wlan", "lte", "nr"], ...] = ("wlan", "lte", "nr")


def _fleet_messages(
    routers: int, links: int, second: int, flap: int
) -> list[tuple[TopicName, bytes]]:
    out: list[tuple[TopicName, bytes]] = []
    count = 0
    for r in range(routers):
        mr = f"mr{r:04d}"
        for link in range(links):
            interface = f"if{link}"
            count += 1
            if flap and count % flap == 0:
                message: LinkMetrics | LinkState = LinkState(
                    sender=mr,
                    interface=interface,
                    bid=link + 1,
                    up=(second + r) % 2 == 0,
                    carrier=True,
                    timestamp=float(second),
                )
                out.append((TopicName(TopicKind.LINK_STATE, mr, interface), encode(message)))
                continue
            message = LinkMetrics(
                sender=mr,
                interface=interface,
                bid=link + 1,
                technology=TECHNOLOGIES[link % 3],
                rtt_ms=20.0 + (r + second) % 17,
                jitter_ms=1.5,
                loss=0.001 * (second % 5),
                rx_bps=1e6 + second,
                tx_bps=2e5,
                timestamp=float(second),
            )
            out.append((TopicName(TopicKind.LINK_METRICS, mr, interface), encode(message)))
    return out


def cpu_run(routers: int, links: int, seconds: int, flap: int) -> dict[str, float]:
    """One repetition: simulated `seconds` of the fleet into a fresh picture."""
    batches = [_fleet_messages(routers, links, s, flap) for s in range(min(seconds, 4))]
    decoded = [[(t, decode_message(t.kind, p)) for t, p in batch] for batch in batches]
    now = [1000.0]
    picture = Picture(ConsoleState(Limits(routers=routers * 2)), clock=lambda: now[0])
    cursor = FleetCursor()
    decode_feed = feed_only = fleet = 0.0
    messages = 0
    for second in range(seconds):
        now[0] = 1000.0 + second
        batch = batches[second % len(batches)]
        started = time.process_time()
        for topic, payload in batch:
            picture.feed(topic, decode_message(topic.kind, payload))
        decode_feed += time.process_time() - started
        started = time.process_time()
        for topic, message in decoded[second % len(decoded)]:
            picture.feed(topic, message)
        feed_only += time.process_time() - started
        messages += len(batch)
        started = time.process_time()
        picture.fleet(cursor)
        fleet += time.process_time() - started
    return {
        "decode_feed_us": decode_feed / messages * 1e6,
        "feed_us": feed_only / messages * 1e6,
        "fleet_event_us": fleet / seconds * 1e6,
    }


def memory_mib(routers: int, links: int, samples: int) -> float:
    """What the picture holds (tracemalloc) once every link's history is full."""
    decoded = [(t, decode_message(t.kind, p)) for t, p in _fleet_messages(routers, links, 0, 0)]
    tracemalloc.start()
    state = ConsoleState(Limits(routers=routers * 2, history=samples))
    for second in range(samples):
        for topic, message in decoded:
            state.feed(topic, message, 1000.0 + second)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / 2**20


def _load(root: str, routers: int, links: int, slices: int) -> None:
    """The fleet at 1 Hz, from its own process (monitors are other processes: publishing
    3,000 messages a second from the console's interpreter would take its GIL), spread over
    `slices` even slices of each second (1: all at once, the worst phase)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topics = Topics(root)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    second = 0
    while True:
        started = time.monotonic()
        batch = _fleet_messages(routers, links, second, 0)
        size = -(-len(batch) // slices)
        for k in range(slices):
            for topic, payload in batch[k * size : (k + 1) * size]:
                publisher.publish(topics.link_metrics(topic.owner, topic.item), payload, qos=0)
            time.sleep(max(0.0, started + (k + 1) / slices - time.monotonic()))
        second += 1


@dataclass(slots=True)
class DelayRun:
    """Per state change: publish -> fed to the picture (broker, paho, decode: `bus`), fed ->
    the stream's event built (`wait`: the stream's wake-up and gaps), built -> read by the
    client (`send`: JSON, uvicorn, the socket); and the console process's CPU per message."""

    total: list[float] = field(default_factory=list)
    bus: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    send: list[float] = field(default_factory=list)
    cpu_us_per_message: float = 0.0


def delay_run(routers: int, links: int, count: int, slices: int) -> DelayRun:
    """Publish-to-event delays of a live console under the fleet's load, with their parts."""
    import multiprocessing

    import httpx2
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from services.console.service import ConsoleService
    from services.contracts.settings import BrokerSettings
    from tests.console.webapp import PASSWORDS, csrf_of, settings

    root = f"bench-{uuid.uuid4().hex[:8]}/multinet/v1"
    topics = Topics(root)
    loader = multiprocessing.get_context("spawn").Process(
        target=_load, args=(root, routers, links, slices), daemon=True
    )
    loader.start()
    service = ConsoleService(
        settings(
            listen="127.0.0.1:0", stream_max_s=600.0, router_interval_s=0.5, fleet_interval_s=1.0
        ),
        BrokerSettings(topic_root=root, session_expiry_s=0),
    )
    probe = "mr0000"
    marks: dict[str, float | bool] = {}
    picture = service.picture
    feed, router = picture.feed, picture.router

    def fed(topic: TopicName, message: object) -> bool:
        taken = feed(topic, message)
        if topic.item == "probe0" and isinstance(message, LinkState) and "fed" not in marks:
            marks["fed"] = time.monotonic()
        return taken

    def built(name: str, revision: int, after: float | None) -> dict[str, Any] | None:
        view = router(name, revision, after)
        if view is not None and "fed" in marks and "built" not in marks:
            shown = [link["up"] for link in view["links"] if link["interface"] == "probe0"]
            if shown == [marks["up"]]:
                marks["built"] = time.monotonic()
        return view

    picture.feed, picture.router = fed, built  # type: ignore[method-assign]
    ready = threading.Event()
    thread = threading.Thread(target=service.run, kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(15)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    run = DelayRun()
    try:
        client = httpx2.Client(
            base_url=f"http://127.0.0.1:{service.port}", timeout=30, follow_redirects=True
        )
        form = client.get("/login")
        client.post(
            "/login",
            data={"user": "alice", "password": PASSWORDS["alice"], "csrf": csrf_of(form.text)},
        )
        time.sleep(3.0)  # the fleet is in the picture
        taken = service.metrics.registry.get_sample_value
        messages = taken("multinet_console_messages_total", {"kind": "link-metrics"}) or 0.0
        cpu = time.process_time()
        with client.stream("GET", f"/events/mr/{probe}") as stream:
            lines = stream.iter_lines()
            for i in range(count):
                up = i % 2 == 1
                state = LinkState(sender=probe, interface="probe0", bid=9, up=up, carrier=up)
                marks.clear()
                marks["up"] = up
                sent = time.monotonic()
                publisher.publish(topics.link_state(probe, "probe0"), encode(state), qos=1)
                for line in lines:
                    if not line.startswith("data: "):
                        continue
                    view = json.loads(line[6:])
                    shown = [link["up"] for link in view["links"] if link["interface"] == "probe0"]
                    if shown == [up]:
                        read = time.monotonic()
                        fed_at, built_at = float(marks["fed"]), float(marks["built"])
                        run.total.append(read - sent)
                        run.bus.append(fed_at - sent)
                        run.wait.append(built_at - fed_at)
                        run.send.append(read - built_at)
                        break
                # A random pause, so the publishes fall at every phase of the stream's polls.
                time.sleep(0.3 + random.random() * 0.4)
        cpu = time.process_time() - cpu
        messages = (
            taken("multinet_console_messages_total", {"kind": "link-metrics"}) or 0.0
        ) - messages
        run.cpu_us_per_message = cpu / max(1.0, messages) * 1e6
    finally:
        loader.terminate()
        loader.join(5)
        publisher.disconnect()
        publisher.loop_stop()
        service.stop()
        thread.join(10)
    return run


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def render_run(routers: int, links: int, loads: int) -> list[float]:
    """Navigation start -> fleet table drawn (seconds), per load of the fleet page."""
    import socket

    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from services.console.web import make_app
    from tests.console.chromium import chromium
    from tests.console.webapp import PASSWORDS, parts, settings

    config, picture, auth, metrics = parts(settings(stream_max_s=600.0, fleet_interval_s=1.0))
    for second in range(2):
        for topic, payload in _fleet_messages(routers, links, second, 7):
            picture.feed(topic, decode_message(topic.kind, payload))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(make_app(config, picture, auth, metrics, None), log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    times: list[float] = []
    try:
        with chromium() as browser:
            browser.get(url)
            browser.find_element(By.ID, "user").send_keys("alice")
            browser.find_element(By.ID, "password").send_keys(PASSWORDS["alice"])
            browser.find_element(By.ID, "login").click()
            for _ in range(loads + 1):  # the first load warms the caches: not counted
                browser.get(url)
                mark = WebDriverWait(browser, 30, poll_frequency=0.05).until(
                    lambda d: d.execute_script(
                        "const m = performance.getEntriesByName('fleet-rendered');"
                        "return m.length ? m[0].startTime : null;"
                    )
                )
                shown = browser.execute_script(
                    "return document.querySelectorAll('#rows tr').length"
                )
                if shown != routers:
                    raise RuntimeError(f"{shown} rows in the table, {routers} expected")
                times.append(float(mark) / 1000)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    return times[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routers", type=int, default=1000)
    parser.add_argument("--links", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="simulated seconds per repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--flap", type=int, default=100, help="every Nth message a state change")
    parser.add_argument("--delay", action="store_true", help="part 2: bus to event delay")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument(
        "--slices", type=int, default=10, help="the fleet's second in this many bursts (part 2)"
    )
    parser.add_argument("--render", action="store_true", help="part 3: first render in Chromium")
    parser.add_argument("--loads", type=int, default=5, help="fleet page loads (part 3)")
    args = parser.parse_args()
    rate = args.routers * args.links
    print(f"console: {args.routers} routers x {args.links} links at 1 Hz = {rate} messages/s")
    runs = [cpu_run(args.routers, args.links, args.seconds, args.flap) for _ in range(args.reps)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"  decode + feed: {median['decode_feed_us']:.1f} us/message (median of {args.reps})")
    print(f"  feed alone:    {median['feed_us']:.1f} us/message")
    print(
        f"  share of one core at 1 Hz (decode + feed): "
        f"{median['decode_feed_us'] * rate / 1e4:.1f} %"
    )
    print(f"  one fleet event (rows changed in a second): {median['fleet_event_us']:.0f} us")
    samples = Limits().history
    mib = memory_mib(args.routers, args.links, samples)
    print(f"  memory of the picture, {samples} samples per link held: {mib:.0f} MiB")
    if args.delay:
        run = delay_run(args.routers, args.links, args.count, args.slices)
        if not run.total:
            print("  delay: no event seen")
            return 1
        print(
            f"  bus -> router stream event, under the fleet's load ({args.slices} slices a "
            f"second): p50 {statistics.median(run.total) * 1000:.0f} ms, "
            f"p99 {_p(run.total, 0.99) * 1000:.0f} ms ({len(run.total)} of {args.count})"
        )
        for name, values in (("bus", run.bus), ("wait", run.wait), ("send", run.send)):
            print(
                f"    {name:5} p50 {statistics.median(values) * 1000:6.1f} ms   "
                f"p99 {_p(values, 0.99) * 1000:6.1f} ms"
            )
        print(
            f"  console process CPU during the run: {run.cpu_us_per_message:.1f} us per fleet "
            "message (bus thread, streams, the bench's client)"
        )
    if args.render:
        times = render_run(args.routers, args.links, args.loads)
        print(
            f"  first render of the fleet view in headless Chromium ({args.routers} routers): "
            f"median {statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms "
            f"({len(times)} loads; navigation start -> table drawn)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
