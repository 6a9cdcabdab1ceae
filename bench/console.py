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
and uvicorn), the fleet reports in the background at 1 Hz, a client holds a router's event
stream, and a link-state change is published `--count` times; the time from the publish to
the event that shows it is recorded. Quoted: p50 and p99.

Part 3, first render (`--render`, needs Debian's chromium and chromium-driver): the console's
web app (uvicorn) over a picture holding the whole fleet, headless Chromium logged in loads
the fleet page `--loads` times; each load's time from the navigation's start to the mark the
page sets once its first fleet event is in the table and drawn (`fleet-rendered`, a
`performance` mark: `performance.timeOrigin` is the navigation's start). Quoted: median and
worst, with every row checked to be in the table.

    .venv/bin/python -m bench.console [--routers 1000] [--links 3] [--seconds 10] [--delay]
        [--render] [--loads 5]
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
from typing import Literal

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


def delay_run(routers: int, links: int, count: int) -> list[float]:
    """Publish-to-event delays (seconds) of a live console under the fleet's load."""
    import httpx2
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from services.console.service import ConsoleService
    from services.contracts.settings import BrokerSettings
    from tests.console.webapp import PASSWORDS, csrf_of, settings

    root = f"bench-{uuid.uuid4().hex[:8]}/multinet/v1"
    topics = Topics(root)
    service = ConsoleService(
        settings(
            listen="127.0.0.1:0", stream_max_s=600.0, router_interval_s=0.5, fleet_interval_s=1.0
        ),
        BrokerSettings(topic_root=root, session_expiry_s=0),
    )
    ready = threading.Event()
    thread = threading.Thread(target=service.run, kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(15)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    stop = threading.Event()

    def load() -> None:
        second = 0
        while not stop.is_set():
            started = time.monotonic()
            for topic, payload in _fleet_messages(routers, links, second, 0):
                publisher.publish(topics.link_metrics(topic.owner, topic.item), payload, qos=0)
            second += 1
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    delays: list[float] = []
    try:
        client = httpx2.Client(
            base_url=f"http://127.0.0.1:{service.port}", timeout=30, follow_redirects=True
        )
        form = client.get("/login")
        client.post(
            "/login",
            data={"user": "alice", "password": PASSWORDS["alice"], "csrf": csrf_of(form.text)},
        )
        time.sleep(2.0)  # the fleet is in the picture
        probe = "mr0000"
        with client.stream("GET", f"/events/mr/{probe}") as stream:
            lines = stream.iter_lines()
            for i in range(count):
                up = i % 2 == 1
                state = LinkState(sender=probe, interface="probe0", bid=9, up=up, carrier=up)
                sent = time.monotonic()
                publisher.publish(topics.link_state(probe, "probe0"), encode(state), qos=1)
                for line in lines:
                    if not line.startswith("data: "):
                        continue
                    view = json.loads(line[6:])
                    shown = [link["up"] for link in view["links"] if link["interface"] == "probe0"]
                    if shown == [up]:
                        delays.append(time.monotonic() - sent)
                        break
                # A random pause, so the publishes fall at every phase of the stream's polls.
                time.sleep(0.3 + random.random() * 0.4)
    finally:
        stop.set()
        loader.join(5)
        publisher.disconnect()
        publisher.loop_stop()
        service.stop()
        thread.join(10)
    return delays


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
        delays = sorted(delay_run(args.routers, args.links, args.count))
        if not delays:
            print("  delay: no event seen")
            return 1
        p50 = statistics.median(delays)
        p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
        print(
            f"  bus -> router stream event, under the fleet's load: p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms ({len(delays)} of {args.count})"
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
