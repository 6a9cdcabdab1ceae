"""`multinet testbed run|down|check`: the end-to-end test bed from the command line.

`main(argv)` is the whole command (argv without the leading "testbed"); `add_subcommand`
hangs the same parser under `multinet` for services/cli.py. A run needs root (namespaces,
netfilter, raw sockets); without it the command says so and offers `--simulate`, which shows
the NSA core's decisions over the scenario's timeline with a fake clock and in-memory
enforcement, and needs neither root nor a broker.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from services.capabilities import PIPE_KINDS, MissingCapability
from services.contracts.errors import InvalidInput
from services.contracts.settings import BrokerSettings, parse_listen
from services.testbed.scenario import Decider, Scenario

_NEEDS_ROOT = (
    "multinet testbed run needs root: it builds network namespaces and runs PREM workers and "
    "MCoA agents that change netfilter, routes and rules, and send raw Mobility Header "
    "packets.\nRun it as root, or add --simulate to see the decisions without namespaces "
    "(the NSA core over the scenario's timeline, in-memory enforcement)."
)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The `testbed` parser (or fill in `parser`, a subparser made by the caller)."""
    parser = parser or argparse.ArgumentParser(
        prog="multinet testbed",
        description="The paper's Figure 6 test bed in network namespaces, driven by scenarios.",
    )
    sub = parser.add_subparsers(dest="testbed_command", required=True, metavar="ACTION")
    run = sub.add_parser(
        "run",
        help="build the test bed, run a scenario on a real HTTP stream, measure and draw it",
        description="Build the namespaces, start every service as its own process, run the "
        "scenario's timeline, and write result.json, timeline.txt and figure7.png to --out.",
    )
    run.add_argument(
        "--scenario",
        default="figure7",
        metavar="NAME|FILE",
        help="a shipped scenario (figure7, radio, critical) or a scenario file (default figure7)",
    )
    run.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: new)")
    run.add_argument(
        "--keep",
        action="store_true",
        help="leave the namespaces and services running afterwards (`multinet testbed down`)",
    )
    run.add_argument(
        "--simulate",
        action="store_true",
        help="no root, no namespaces: print the decisions over the timeline (memory back end)",
    )
    run.add_argument(
        "--decider",
        choices=[d.value for d in Decider],
        help="soap: the scenario's own policies through the SOAP gateway (NSA stub); nsa: the "
        "NSA service decides (default: nsa when the scenario allows it, else soap)",
    )
    run.add_argument("--backend", choices=["nftables", "iptables"], default="nftables")
    run.add_argument(
        "--pipe",
        choices=["auto", *PIPE_KINDS],
        default="auto",
        help="the pipe kind between HA and MR (auto: the first of ip6tnl, seg6, vxlan this "
        "kernel has; `multinet doctor` shows which)",
    )
    run.add_argument("--prefix", default="mtb", help="namespace name prefix (default mtb)")
    run.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    run.add_argument(
        "--console",
        action="store_true",
        help="serve the operator console during the run (operator side, on the run's broker); "
        "its URL and a login made for this run are printed",
    )
    run.add_argument(
        "--console-listen",
        metavar="HOST:PORT",
        help="where the console listens (default: 127.0.0.1 on a free port); implies --console",
    )
    run.add_argument(
        "--console-hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the test bed and its console up this long after the scenario (Ctrl-C ends "
        "it early; default 0: stop with the scenario); implies --console",
    )
    run.set_defaults(testbed_func=_run)
    down = sub.add_parser("down", help="stop a kept or leftover test bed and delete it")
    down.add_argument("--prefix", default="mtb")
    down.set_defaults(testbed_func=_down)
    check = sub.add_parser("check", help="validate a scenario file and exit")
    check.add_argument("scenario", metavar="NAME|FILE")
    check.set_defaults(testbed_func=_check)
    return parser


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `testbed` to the `multinet` command (services/cli.py)."""
    parser = sub.add_parser(
        "testbed",
        help="the end-to-end test bed: namespaces, every service, a scenario, Figure 7",
        description="The paper's Figure 6 test bed in network namespaces, driven by scenarios.",
    )
    build_parser(parser)
    parser.set_defaults(func=lambda args: int(args.testbed_func(args)))


def _problems(exc: InvalidInput) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    return 2


def _check(args: argparse.Namespace) -> int:
    from services.testbed import scenario

    try:
        loaded, path = scenario.load(args.scenario)
    except InvalidInput as exc:
        return _problems(exc)
    steps = {d.value: len(loaded.steps_for(d)) for d in loaded.deciders}
    print(f"{path}: OK (scenario {loaded.name}, steps per decider {steps})")
    return 0


def _down(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("multinet testbed down needs root (it deletes network namespaces)", file=sys.stderr)
        return 2
    from services.testbed.runner import down

    removed = down(args.prefix)
    print("removed: " + (", ".join(removed) if removed else f"nothing ({args.prefix}-* absent)"))
    return 0


def _broker(value: str) -> BrokerSettings | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return None
    return BrokerSettings(host=host.strip("[]"), port=int(port))


def _console_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the console options, None when nothing (sets `args.console`)."""
    if args.console_listen is not None or args.console_hold:
        args.console = True
    if not args.console:
        return None
    if args.simulate:
        return "--console needs the real test bed (a broker and services): drop --simulate"
    if args.console_hold < 0:
        return f"--console-hold {args.console_hold:g}: expected seconds >= 0"
    if args.console_listen is not None:
        try:
            _, port = parse_listen(args.console_listen)
        except ValueError as exc:
            return f"--console-listen: {exc}"
        if port == 0:
            return "--console-listen: name a port (without it a free one is chosen)"
    return None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from services.testbed import scenario

    try:
        loaded, path = scenario.load(args.scenario)
    except InvalidInput as exc:
        return _problems(exc)
    requested = Decider(args.decider) if args.decider else None
    problem = _console_problem(args)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if args.simulate:
        from services.testbed.simulate import simulate

        return simulate(loaded, requested, path)
    if os.geteuid() != 0:
        print(_NEEDS_ROOT, file=sys.stderr)
        return 2
    return _run_bed(args, loaded, path, requested)


def _run_bed(
    args: argparse.Namespace, loaded: Scenario, path: Path, requested: Decider | None
) -> int:
    broker = _broker(args.broker)
    if broker is None:
        print(f"--broker {args.broker!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    from services.testbed import runner
    from services.testbed.rundata import RunOptions

    try:
        decider = runner.choose_decider(loaded, requested)
    except runner.DeciderError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = args.out or runner.default_out(loaded.name)
    base = RunOptions(
        scenario=loaded,
        scenario_file=path,
        decider=decider,
        out=out,
        keep=args.keep,
        prefix=args.prefix,
        backend=args.backend,
        broker=broker,
        pipe=args.pipe,
        console=args.console,
        console_listen=args.console_listen,
        console_hold_s=args.console_hold,
    )
    # Both end the run through its clean-up path (SIGINT explicitly too: a shell starts a
    # background job with SIGINT ignored, and Ctrl-C must still tear the test bed down).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    variants = loaded.variants()
    results: dict[str, dict[str, object]] = {}
    failed = False
    for label, variant in variants:
        options = base
        if label:
            print(f"\n=== {loaded.name}: {label} ===")
            options = dataclasses.replace(
                base,
                scenario=variant,
                out=out / label,
                keep=base.keep and label == variants[-1][0],
            )
        try:
            data = runner.run(options)
        except KeyboardInterrupt:
            print("interrupted: the test bed was torn down", file=sys.stderr)
            return 130
        except MissingCapability as exc:
            print(f"multinet testbed: {exc}", file=sys.stderr)
            return 2
        code, result = _outputs(data)
        failed = failed or code != 0
        results[label] = result
    if len(variants) > 1:
        _compare(out, loaded.name, results)
    return 1 if failed else 0


def _compare(out: Path, name: str, results: dict[str, dict[str, object]]) -> None:
    """The runs side by side: printed, in comparison.txt, and in out/result.json."""
    from services.testbed import report

    text = report.comparison(results)
    (out / "comparison.txt").write_text(text + "\n", encoding="utf-8")
    (out / "result.json").write_text(
        json.dumps({"scenario": name, "runs": results, "comparison": text}, indent=1),
        encoding="utf-8",
    )
    print(f"\n{name}: " + " vs ".join(results))
    print(text)
    print(f"\nboth runs: {out}/result.json (and {', '.join(results)}/ for each run)")


def _outputs(data: object) -> tuple[int, dict[str, object]]:
    from services.testbed import analysis, plot, report
    from services.testbed.rundata import RunData

    assert isinstance(data, RunData)
    result = analysis.analyse(data)
    out = data.options.out
    paths = report.write(out, result)
    figure = plot.draw(result, out / "figure7.png")
    print()
    print(report.table(result))
    print(f"\nrun directory: {out}")
    print(f"  {paths['json'].name}, {paths['timeline'].name}, logs/, config/", end="")
    print(f", {figure.name}" if figure else " (no figure: matplotlib is not installed)")
    return (1 if data.failure else 0), result


def main(argv: Sequence[str] | None = None) -> int:
    """`multinet testbed ...` (argv without "testbed")."""
    args = build_parser().parse_args(argv)
    return int(args.testbed_func(args))


if __name__ == "__main__":
    sys.exit(main())
