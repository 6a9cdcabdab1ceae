"""Time to enforce one message of N policies, per method, each sample in a fresh namespace.

Every method runs in a child forked into the namespace (`netns.call_in`), times only the
loading step, and then counts what the kernel holds through a separate reader, so a method
that silently loaded less is reported rather than timed as fast.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import rulesets
from services import netns
from services.contracts.policy import Policy
from services.prem.backends import make_backend
from services.prem.core.flowtable import compile_policies
from services.prem.core.reconcile import plan

#: (elapsed seconds, rules the kernel holds afterwards)
Measured = tuple[float, int]
Loader = Callable[[tuple[Policy, ...]], Measured]

LEGACY = "ip6tables-legacy"
LEGACY_RESTORE = "ip6tables-legacy-restore"
LEGACY_SAVE = "ip6tables-legacy-save"


@dataclass(frozen=True)
class Method:
    """A way of loading N policies; `max_n` caps the sizes it is run at (None: no cap)."""

    name: str
    label: str
    load: Loader
    max_n: int | None = None


@dataclass(frozen=True)
class LoadSample:
    """One measurement: `ms` is None when it failed, and `error` says why."""

    method: str
    n: int
    rep: int
    ms: float | None
    rules_seen: int | None
    error: str | None = None


def _count_iptables_rules() -> int:
    out = subprocess.run(
        [LEGACY_SAVE, "-t", "mangle"], capture_output=True, text=True, check=True
    ).stdout
    return sum(line.startswith(f"-A {rulesets.IPTABLES_CHAIN} ") for line in out.splitlines())


def _count_nft_elements() -> int:
    argv = ["nft", "-j", "list", "map", "ip6", rulesets.NFT_TABLE, "flows"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    for item in json.loads(out)["nftables"]:
        if "map" in item:
            return len(item["map"].get("elem", []))
    return 0


def load_paper(policies: tuple[Policy, ...]) -> Measured:
    """The paper's method: one ip6tables (legacy) process per policy."""
    commands = rulesets.paper_commands(policies, rulesets.bench_settings("iptables"), LEGACY)
    start = time.perf_counter()
    for argv in commands:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    return elapsed, _count_iptables_rules()


def load_restore(policies: tuple[Policy, ...]) -> Measured:
    """The libiptc floor: every rule in one `ip6tables-legacy-restore -n` commit."""
    text = rulesets.restore_input(policies, rulesets.bench_settings("iptables"))
    start = time.perf_counter()
    subprocess.run([LEGACY_RESTORE, "-w", "-n"], input=text, text=True, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, _count_iptables_rules()


def load_nft(policies: tuple[Policy, ...]) -> Measured:
    """The nftables floor: one `nft -f -` of a map with N elements."""
    text = rulesets.nft_input(policies, rulesets.bench_settings("nftables"))
    start = time.perf_counter()
    subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, _count_nft_elements()


def backend_loader(backend: str) -> Loader:
    """A loader timing `apply` of the named back end (construction and `read` not timed)."""

    def load(policies: tuple[Policy, ...]) -> Measured:
        enforcer = make_backend(rulesets.bench_settings(backend))
        desired = compile_policies(policies)
        changes = plan(desired, enforcer.read())
        start = time.perf_counter()
        enforcer.apply(desired, changes)
        elapsed = time.perf_counter() - start
        held = enforcer.read()
        if held != desired:
            raise RuntimeError(f"{backend}: read back {len(held)} rules, not the desired table")
        return elapsed, len(held)

    return load


def _probe_backend(backend: str) -> None:
    """Construct, read, apply one policy and remove it: fails if the back end cannot work."""
    load = backend_loader(backend)
    load(rulesets.make_policies(1, (1,)))
    make_backend(rulesets.bench_settings(backend)).remove_all()


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def available_methods(ns_prefix: str, paper_cap: int | None) -> tuple[list[Method], list[str]]:
    """The methods that work on this machine, and a line per method that does not."""
    methods: list[Method] = []
    problems: list[str] = []
    missing = [b for b in (LEGACY, LEGACY_RESTORE, LEGACY_SAVE) if shutil.which(b) is None]
    if missing:
        problems.append(f"paper and restore floor unavailable: missing {', '.join(missing)}")
    else:
        methods.append(Method("paper", "paper: ip6tables per policy", load_paper, paper_cap))
        methods.append(Method("restore", "ip6tables-restore -n floor", load_restore))
    for backend in ("iptables", "nftables"):
        ns = f"{ns_prefix}-probe"
        try:
            # Imported here, before any fork, so that every sample of the run uses the same
            # code even if the back end's files change on disk while the benchmark runs.
            importlib.import_module(f"services.prem.backends.{backend}")
            netns.create(ns)
            netns.call_in(ns, _probe_backend, backend)
            methods.append(Method(backend, f"{backend} back end", backend_loader(backend)))
        except Exception as exc:  # any failure makes the back end unavailable
            problems.append(f"backend {backend} unavailable: {_last_line(exc)}")
        finally:
            netns.delete(ns)
    if shutil.which("nft") is None:
        problems.append("nft floor unavailable: no nft binary")
    else:
        methods.append(Method("nft", "nft -f floor", load_nft))
    return methods, problems


def measure(method: Method, n: int, rep: int, ns: str) -> LoadSample:
    """Load `n` policies with `method` in the fresh namespace `ns` (deleted afterwards)."""
    policies = rulesets.make_policies(n, (1, 2, 3, 4))
    try:
        netns.create(ns)
        elapsed, seen = netns.call_in(ns, method.load, policies)
    except Exception as exc:  # a failed sample is recorded, the run goes on
        return LoadSample(method.name, n, rep, None, None, _last_line(exc))
    finally:
        netns.delete(ns)
    if seen != n:
        return LoadSample(method.name, n, rep, None, seen, f"kernel holds {seen} of {n} rules")
    return LoadSample(method.name, n, rep, elapsed * 1000, seen)


def run(
    methods: list[Method], sizes: list[int], reps: int, ns_prefix: str, progress: bool = True
) -> list[LoadSample]:
    """Every (method, N) `reps` times; methods interleaved, their order rotated per repetition."""
    samples: list[LoadSample] = []
    for rep in range(reps):
        order = methods[rep % len(methods) :] + methods[: rep % len(methods)]
        for n in sizes:
            for method in order:
                if method.max_n is not None and n > method.max_n:
                    continue
                sample = measure(method, n, rep, f"{ns_prefix}-load")
                samples.append(sample)
                if progress:
                    shown = f"{sample.ms:9.1f} ms" if sample.ms is not None else sample.error
                    print(f"  load rep {rep} N={n:<5} {method.name:<9} {shown}", flush=True)
    return samples


def ns_prefix() -> str:
    """A namespace name prefix unique to this run (other engineers share the machine)."""
    return f"mnbench{os.getpid()}"
