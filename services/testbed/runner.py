"""One test bed run: build, start, stream, run the scenario, measure, write, tear down.

The order matters and is kept in one place: any leftover of an earlier run is removed first
(its recorded processes, then its namespaces); the recorder subscribes before any service
starts (so no status or retained presence is missed); services start group by group, each
waited for; the counters start before the stream; t0 is when the receiver starts. Whatever
happens after the first namespace exists (a step timing out, a service dying, Ctrl-C), the
`finally` path stops every process in reverse order and deletes the namespaces, unless the
caller asked to keep them (`keep`, not honoured for Ctrl-C).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services import capabilities, netns
from services.monitor.responder import DelayResponder
from services.ports import free_port
from services.soap_gateway.passwords import hash_password
from services.testbed import addressing as a
from services.testbed import configs, processes, tcpstats
from services.testbed.actions import ActionContext, SoapStub
from services.testbed.broker import ensure_broker
from services.testbed.configs import CONSOLE_USER, RunSettings
from services.testbed.counters import FINE_PERIOD_S, CounterSampler
from services.testbed.recorder import Recorder
from services.testbed.rundata import ConsoleAccess, RunData, RunOptions
from services.testbed.scenario import Decider, Degrade, Scenario, trace_path
from services.testbed.supervisor import Supervisor, kill_recorded, registry_path
from services.testbed.timeline import Clock, StepFailed, run_steps
from services.testbed.topology import Topology

DEFAULT_OUT = Path("/var/tmp/multinet-testbed")  # noqa: S108 - documented, root-only runs
_READY_TIMEOUT_S = 40.0


class DeciderError(ValueError):
    """The scenario does not run with the requested decider."""


def choose_decider(scenario: Scenario, requested: Decider | None) -> Decider:
    """The requested decider, else the NSA when the scenario allows it, else the SOAP stub.
    Raises DeciderError when the scenario does not list the requested one."""
    if requested is None:
        return Decider.NSA if Decider.NSA in scenario.deciders else Decider.SOAP
    if requested not in scenario.deciders:
        allowed = ", ".join(d.value for d in scenario.deciders)
        raise DeciderError(
            f"scenario {scenario.name} does not run with --decider {requested.value} "
            f"(its deciders: {allowed})"
        )
    return requested


def default_out(scenario: str) -> Path:
    """A fresh run directory under /var/tmp/multinet-testbed."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return DEFAULT_OUT / f"{stamp}-{scenario}"


def down(prefix: str = "mtb") -> list[str]:
    """Remove a test bed: its recorded processes, then its namespaces; return what was ended."""
    ended = kill_recorded(registry_path(prefix))
    bed = Topology(a.Naming(prefix))
    existed = [name for name in bed.naming.all() if netns.exists(name)]
    bed.destroy()
    return ended + [f"namespace {name}" for name in existed]


def pipe_kind(requested: str, say: Callable[[str], None] = print) -> str:
    """The pipe kind of a run: probed once, then written into every node's settings, so both
    ends of each binding build the same kind. MissingCapability (naming the kernel option
    and what there is instead) when the kernel cannot build the requested one."""
    caps = capabilities.probe(capabilities.PIPE_KINDS)
    kind = capabilities.choose_pipe_kind(requested, caps)
    say(f"pipe kind: {kind} (asked: {requested}; this kernel has: {', '.join(caps.pipe_kinds())})")
    return kind


def prepare(options: RunOptions, say: Callable[[str], None] = print) -> Live:
    """Everything before the services: the pipe kind, the broker, the run directory and its
    settings, the removal of any leftover of an earlier run, and the namespaces."""
    kind = pipe_kind(options.pipe, say)
    if any(isinstance(s.do, Degrade) and s.do.loss > 0 for s in options.scenario.steps):
        # Random drops are nft `numgen` in the access routers: refuse the run now, naming the
        # kernel option, rather than when the scenario reaches its first loss step.
        capabilities.probe(("nft numgen",)).require("nft numgen")
    ensure_broker(options.broker.host, options.broker.port)
    topic_root = f"testbed-{uuid.uuid4().hex[:8]}/multinet/v1"
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(options.scenario_file, out / f"scenario{options.scenario_file.suffix}")
    settings = RunSettings(
        run_dir=out,
        topic_root=topic_root,
        broker_host=options.broker.host,
        broker_port=options.broker.port,
        soap_port=free_port(),
        backend=options.backend,
        pipe=kind,
    )
    console_hash: str | None = None
    access: ConsoleAccess | None = None
    if options.console:
        listen = options.console_listen or f"127.0.0.1:{free_port()}"
        settings = dataclasses.replace(settings, console_listen=listen)
        password = secrets.token_urlsafe(12)
        console_hash = hash_password(password)
        access = ConsoleAccess(url=f"http://{listen}/", user=CONSOLE_USER, password=password)
    registry = registry_path(options.prefix)
    kill_recorded(registry)
    bed = Topology(a.Naming(options.prefix))
    say(f"building the test bed (namespaces {options.prefix}-*) ...")
    bed.build()
    return Live(
        options=options,
        settings=settings,
        bed=bed,
        recorder=Recorder(options.broker.model_copy(update={"topic_root": topic_root})),
        sampler=CounterSampler(bed.ns("mr"), [link.interface for link in a.MR_LINKS]),
        fine=CounterSampler(
            bed.ns("mr"), [link.interface for link in a.MR_LINKS], period_s=FINE_PERIOD_S
        ),
        supervisor=Supervisor(out / "logs", registry),
        data=RunData(
            options=options,
            topic_root=topic_root,
            pipe_kind=kind,
            console=access,
        ),
        say=say,
        console_hash=console_hash,
    )


def run(options: RunOptions, say: Callable[[str], None] = print) -> RunData:
    """Run one scenario on a fresh test bed; return the measurements (see `failure`)."""
    live = prepare(options, say)
    data = live.data
    interrupted = False
    try:
        try:
            live.start()
            live.scenario()
        except (StepFailed, RuntimeError, TimeoutError) as exc:
            data.failure = str(exc)
            say(f"run failed: {exc}")
        live.hold()
    except KeyboardInterrupt:
        interrupted = True
        data.failure = "interrupted"
        raise
    finally:
        live.finish(keep=options.keep and not interrupted)
    return data


@contextmanager
def session(
    options: RunOptions, say: Callable[[str], None] = print, *, skip: frozenset[str] = frozenset()
) -> Iterator[Live]:
    """A started test bed without a scenario (benchmarks drive it themselves); the services
    named in `skip` are not started. Torn down on exit, whatever happens."""
    live = prepare(options, say)
    try:
        live.start(skip=skip)
        yield live
    finally:
        live.finish(keep=False)


@dataclass
class Live:
    """The parts of a run in progress."""

    options: RunOptions
    settings: RunSettings
    bed: Topology
    recorder: Recorder
    sampler: CounterSampler
    fine: CounterSampler
    supervisor: Supervisor
    data: RunData
    say: Callable[[str], None]
    console_hash: str | None = None
    collected: bool = False
    responders: dict[str, DelayResponder] = dataclasses.field(default_factory=dict)

    def start(self, *, skip: frozenset[str] = frozenset()) -> None:
        """Subscribe to the run's topics, start the services, start counting."""
        self.recorder.start()
        self.start_responders()
        self.start_services(skip)
        self.sampler.start()
        self.fine.start()

    def start_services(self, skip: frozenset[str] = frozenset()) -> None:
        """Start the service groups in order, each waited for."""
        options = self.options
        traces: dict[str, Path] = {
            link: trace_path(options.scenario_file, name)
            for link, name in options.scenario.traces.items()
        }
        groups = processes.service_groups(
            self.settings,
            self.bed,
            self.recorder,
            decider=options.decider,
            nsa=options.scenario.nsa,
            traces=traces,
            stream=options.scenario.stream,
            console_hash=self.console_hash,
            watch=options.scenario.monitor,
        )
        for full in groups:
            group = [spec for spec in full if spec.name not in skip]
            if not group:
                continue
            names = ", ".join(spec.name for spec in group)
            started = time.monotonic()
            self.supervisor.start_group(group, _READY_TIMEOUT_S)
            self.say(f"ready: {names} ({time.monotonic() - started:.1f} s)")
            if self.data.console is not None and any(s.name == "console" for s in group):
                access = self.data.console
                self.say(
                    f"console: {access.url}  login: {access.user} / {access.password}  "
                    "(a password for this run only)"
                )

    def start_responders(self) -> None:
        """A probe responder in every access router when a link is probed by UDP (a
        scenario's `monitor`), so `degrade` can add delay to what the monitor measures."""
        if not any(how.probe == "udp" for how in self.options.scenario.monitor.values()):
            return
        for router in a.ACCESS_ROUTERS:
            responder = DelayResponder("::", configs.PROBE_PORT)
            _in_thread(self.bed.ns(router), responder.open)
            responder.start()
            self.responders[router] = responder

    def hold(self) -> None:
        """Keep the test bed up `console_hold_s` after the scenario, for a look at the console
        (its measurements are taken first, so the hold changes nothing of the run's results);
        Ctrl-C ends the hold early and the run ends as usual."""
        hold_s, console = self.options.console_hold_s, self.data.console
        if hold_s <= 0 or console is None or not self.running("console"):
            return
        self.collect()
        deadline = time.monotonic() + hold_s
        try:
            self.say(
                f"the scenario is over; the console stays up for {hold_s:g} s at {console.url} "
                "(Ctrl-C to stop now)"
            )
            while time.monotonic() < deadline:
                self.supervisor.check_alive()
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        except KeyboardInterrupt:
            self.say("hold ended")

    def running(self, name: str) -> bool:
        """Whether the process started as `name` still runs."""
        try:
            return self.supervisor.process(name).poll() is None
        except KeyError:
            return False

    def scenario(self) -> None:
        """Start the stream (t0), run the steps, stop the stream and collect its record."""
        options, data, bed = self.options, self.data, self.bed
        scenario = options.scenario
        soap = SoapStub(self.settings.gateway_url) if options.decider is Decider.SOAP else None
        ctx = ActionContext(bed=bed, recorder=self.recorder, soap=soap, responders=self.responders)
        data.tcp_before = tcpstats.counters(bed)
        record = options.out / "stream.json"
        data.t0 = time.monotonic()
        self.supervisor.start(processes.receiver(bed, scenario.stream, record))
        voice = (
            processes.voice_peers(bed, scenario.voice, options.out)
            if scenario.voice is not None
            else []
        )
        for spec in voice:
            self.supervisor.start(spec)
        clock = Clock(data.t0, self.say, self.sampler, self.supervisor.check_alive)
        self.say(
            f"scenario {scenario.name} with the {options.decider.value} decider; t0 = stream start"
        )
        try:
            steps = scenario.steps_for(options.decider)
            data.steps = run_steps(steps, ctx, self.recorder, self.sampler, clock)
            if scenario.end_at is not None:
                clock.sleep_until(data.t0 + scenario.end_at)
        finally:
            data.ended = time.monotonic()
            data.tcp_connection = tcpstats.connection(bed, scenario.stream.port)
            self.supervisor.stop("http-client@mnn")
            # Both voice ends stop sending at once (each drains what is under way), so
            # neither end's last datagrams reach a peer that has already gone.
            for spec in voice:
                with contextlib.suppress(KeyError, OSError):
                    self.supervisor.process(spec.name).send_signal(signal.SIGTERM)
            for spec in voice:
                self.supervisor.stop(spec.name)
            data.tcp_after = tcpstats.counters(bed)
            data.stream = _read_json(record)
            if voice:
                data.voice = {
                    node: _read_json(options.out / f"voice-{node}.json") for node in ("cn", "mnn")
                }

    def collect(self) -> None:
        """Stop measuring and take what was measured (once)."""
        if self.collected:
            return
        self.collected = True
        data = self.data
        data.ended = data.ended or time.monotonic()
        self.sampler.stop()
        self.fine.stop()
        data.samples = self.sampler.samples()
        data.fine_samples = self.fine.samples()
        data.heard = self.recorder.all()

    def finish(self, *, keep: bool) -> None:
        """Collect what was measured, then stop everything (unless kept)."""
        self.collect()
        if keep:
            self.say(
                f"kept: namespaces {self.options.prefix}-* and their services "
                "(`multinet testbed down` removes them)"
            )
        else:
            self.supervisor.stop_all()
            for responder in self.responders.values():
                responder.stop()
            self.bed.destroy()
        self.recorder.close()


def _in_thread(ns: str, fn: Callable[[], None]) -> None:
    """Call `fn` in a thread of its own inside namespace `ns` (a socket opened there stays
    there; this thread, `setns` being per thread, never leaves the host's namespace)."""
    failed: list[BaseException] = []

    def body() -> None:
        try:
            netns.enter(ns)
            fn()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=body, name=f"in-{ns}")
    thread.start()
    thread.join()
    if failed:
        raise RuntimeError(f"in namespace {ns}: {failed[0]}") from failed[0]


def _read_json(path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        return loaded if isinstance(loaded, dict) else {}
    return {}
