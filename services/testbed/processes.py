"""Which processes a run starts, in which namespace, in which order, and how each is known
to be ready.

Per node, as in a deployment: on the MR a PREM worker, the monitor and the MCoA agent; on the
HA a PREM worker, the MCoA agent and mobility-events; on the operator side (the host
namespace, on localhost) the SOAP gateway, with the `nsa` decider the NSA, and with
`--console` the operator console (in the first group: it hears the bindings registered).
Services that talk to the broker run with `--netns` (their bus connection stays on the host
side, their kernel work happens in the node); the stream server and receiver run under
`ip netns exec`.

Groups start together and are waited for together, in an order that lets each find what it
needs: workers before the NSA (so its first Install reaches them), the NSA and mobility-events
before the MR registers (so the NSA hears the bindings being registered).

Readiness: a retained presence (Topics.presence(node, service)) saying online for the bus
services, the WSDL answering for the gateway, and for the MCoA agents the HA's log saying it
serves and the kernel holding both BID pipes at the HA for the MR (both bindings registered).
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from services.mcoa.pipes import RTPROT_MCOA
from services.nsa.core import NsaConfig
from services.testbed import addressing as a
from services.testbed import configs
from services.testbed.recorder import Recorder
from services.testbed.scenario import Decider, Interface, MonitorLink, StreamSpec, VoiceSpec
from services.testbed.supervisor import Readiness, ServiceSpec
from services.testbed.topology import Topology

#: The NSA service's presence (node: its replica name, service).
NSA_PRESENCE = (configs.NSA_NODE, "nsa")
_CLI = (sys.executable, "-m", "services.cli")


def _online(recorder: Recorder, node: str, service: str) -> Readiness:
    return Readiness(f"presence of {service} on {node}", lambda: recorder.online(node, service))


def _nsa_ready(recorder: Recorder) -> Readiness:
    """The NSA is ready when its presence says online (published once its bus is up)."""
    return _online(recorder, *NSA_PRESENCE)


def _wsdl(url: str) -> Readiness:
    def answers() -> bool:
        with urllib.request.urlopen(f"{url}?wsdl", timeout=1.0) as reply:  # noqa: S310
            return bool(reply.status == 200)

    return Readiness(f"WSDL at {url}?wsdl", answers)


def _console_ready(recorder: Recorder, listen: str) -> Readiness:
    """The console is ready once its presence says online and its pages answer."""

    def answers() -> bool:
        if not recorder.online(configs.CONSOLE_NODE, "console"):
            return False
        with urllib.request.urlopen(f"http://{listen}/healthz", timeout=1.0) as reply:
            return bool(reply.status == 200)

    return Readiness(f"presence of the console and http://{listen}/healthz", answers)


def _kernel(bed: Topology, node: str, argv: list[str], needle: str, count: int = 1) -> Readiness:
    def present() -> bool:
        return bed.run(node, argv, check=False).count(needle) >= count

    return Readiness(f"{needle!r} in `{' '.join(argv)}` on {node}", present)


def _pipes_registered(bed: Topology) -> Readiness:
    def both() -> bool:
        for link in a.MR_LINKS:
            table = str(a.TABLE_BASE + link.bid)
            argv = ["ip", "-6", "route", "show", "table", table, "proto", str(RTPROT_MCOA)]
            if not bed.run("ha", argv, check=False).strip():
                return False
        return True

    return Readiness("a pipe per BID at the HA (both bindings registered)", both)


def _logged(path: Path, needle: str) -> Readiness:
    """Ready once the service's log says `needle` (for a service with no other sign: the HA's
    MCoA agent with kinds that need no rule before their first binding)."""

    def said() -> bool:
        try:
            return needle in path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return Readiness(f"{needle!r} in {path.name}", said)


def _listening(bed: Topology, node: str, port: int) -> Readiness:
    return _kernel(bed, node, ["ss", "-Hltn", f"sport = :{port}"], "LISTEN")


def service_groups(
    run: configs.RunSettings,
    bed: Topology,
    recorder: Recorder,
    *,
    decider: Decider,
    nsa: NsaConfig,
    traces: dict[str, Path],
    stream: StreamSpec,
    console_hash: str | None = None,
    watch: Mapping[Interface, MonitorLink] | None = None,
) -> list[list[ServiceSpec]]:
    """The start groups of one run, with every settings file written to the run directory.
    With `run.console_listen` set, the operator console starts in the first group (so it hears
    the bindings being registered), its one user's password hash `console_hash`."""
    cfg = run.run_dir / "config"
    files = {
        "prem-ha": configs.write(cfg / "prem-ha.yaml", configs.prem(run, "ha")),
        "prem-mr": configs.write(cfg / "prem-mr.yaml", configs.prem(run, "mr")),
        "mcoa-ha": configs.write(cfg / "mcoa-ha.yaml", configs.mcoa(run, "ha")),
        "mcoa-mr": configs.write(cfg / "mcoa-mr.yaml", configs.mcoa(run, "mr")),
        "events": configs.write(cfg / "mobility-events.yaml", configs.mobility_events(run)),
        "monitor": configs.write(cfg / "monitor.yaml", configs.monitor(run, traces, watch)),
        "gateway": configs.write(cfg / "soap-gateway.yaml", configs.soap_gateway(run)),
    }
    server = ServiceSpec(
        name="http-server@cn",
        argv=(
            "ip",
            "netns",
            "exec",
            bed.ns("cn"),
            sys.executable,
            "-m",
            "services.testbed.stream",
            "serve",
            "--port",
            str(stream.port),
            "--rate-bps",
            str(stream.rate_bps),
            "--interval-s",
            str(stream.interval_s),
        ),
        ready=_listening(bed, "cn", stream.port),
        node="cn",
    )

    def service(
        name: str, args: list[str], config: Path, node: str, ready: Readiness
    ) -> ServiceSpec:
        argv = [*_CLI, *args, "--config", str(config)]
        if node != "operator":
            argv += ["--netns", bed.ns(node)]
        return ServiceSpec(name=name, argv=tuple(argv), ready=ready, node=node)

    groups = [
        [
            service(
                "soap-gateway",
                ["soap-gateway"],
                files["gateway"],
                "operator",
                _wsdl(run.gateway_url),
            ),
            service(
                "prem@ha",
                ["prem", "run"],
                files["prem-ha"],
                "ha",
                _online(recorder, a.HA_NODE, "prem"),
            ),
            service(
                "prem@mr",
                ["prem", "run"],
                files["prem-mr"],
                "mr",
                _online(recorder, a.MR_NODE, "prem"),
            ),
            server,
        ]
    ]
    if run.console_listen is not None:
        if console_hash is None:
            raise ValueError("a console needs its user's password hash")
        console_file = configs.write(cfg / "console.yaml", configs.console(run, console_hash))
        groups[0].append(
            service(
                "console",
                ["console", "run"],
                console_file,
                "operator",
                _console_ready(recorder, run.console_listen),
            )
        )
    if decider is Decider.NSA:
        nsa_file = configs.write(cfg / "nsa.yaml", configs.nsa_settings(run, nsa))
        ready = _nsa_ready(recorder)
        groups.append([service("nsa", ["nsa", "run"], nsa_file, "operator", ready)])
    groups.append(
        [
            service(
                "mobility-events@ha",
                ["mobility-events"],
                files["events"],
                "ha",
                _online(recorder, a.HA_NODE, "mobility-events"),
            ),
            service(
                "mcoa-agent@ha",
                ["mcoa-agent", "--role", "ha"],
                files["mcoa-ha"],
                "ha",
                _logged(run.run_dir / "logs" / "mcoa-agent-ha.log", "HA: serving on"),
            ),
            service(
                "monitor@mr",
                ["monitor"],
                files["monitor"],
                "mr",
                _online(recorder, a.MR_NODE, "monitor"),
            ),
        ]
    )
    groups.append(
        [
            service(
                "mcoa-agent@mr",
                ["mcoa-agent", "--role", "mr"],
                files["mcoa-mr"],
                "mr",
                _pipes_registered(bed),
            )
        ]
    )
    return groups


def receiver(bed: Topology, stream: StreamSpec, out: Path) -> ServiceSpec:
    """The MNN's stream receiver (started at t0; it writes its record on SIGTERM)."""
    return ServiceSpec(
        name="http-client@mnn",
        argv=(
            "ip",
            "netns",
            "exec",
            bed.ns("mnn"),
            sys.executable,
            "-m",
            "services.testbed.stream",
            "fetch",
            "--host",
            a.CN,
            "--port",
            str(stream.port),
            "--out",
            str(out),
        ),
        node="mnn",
    )


def voice_peers(bed: Topology, voice: VoiceSpec, out_dir: Path) -> list[ServiceSpec]:
    """The voice stream's two ends, CN and MNN (started at t0; each writes its record to
    `out_dir/voice-<node>.json` when stopped)."""
    specs = []
    for node, remote in (("cn", a.MNN), ("mnn", a.CN)):
        specs.append(
            ServiceSpec(
                name=f"voice@{node}",
                argv=(
                    "ip",
                    "netns",
                    "exec",
                    bed.ns(node),
                    sys.executable,
                    "-m",
                    "services.testbed.voice",
                    "peer",
                    "--remote",
                    remote,
                    "--port",
                    str(voice.port),
                    "--rate",
                    str(voice.rate),
                    "--size",
                    str(voice.size),
                    "--out",
                    str(out_dir / f"voice-{node}.json"),
                ),
                node=node,
            )
        )
    return specs
