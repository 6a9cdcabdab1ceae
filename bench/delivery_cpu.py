"""Where a SOAP delivery's CPU goes, stage by stage: `python -m bench.delivery_cpu [--reps R]`.

`bench.soap_delivery` measures whole processes (gateway, two PREM workers, broker); this
runs the document work of one delivery of `bench.soap_delivery` (a 10-policy Install for a
mobile router's HA and MR) in one process, without sockets, so each stage's CPU is known
and the whole-process figures can be read against it:

- gateway: `check_call` (both documents parsed and checked), and a status decoded from the
  bus;
- worker: `Enforcer.handle` whole (memory back end, state file on disk as in production) and
  its stages: parse, the new desired state (`apply_message`), compile + plan + apply, the
  state's JSON, the store (CPU only: the fsyncs' wait is not CPU), the status encoded;
- `parse` against the model-by-model build it replaced for valid documents
  (`policy_xml._message`, still the way for refused ones), side by side in each repetition:
  the paired ratio's median is printed.

Every figure is the median over repetitions of the mean CPU time (`time.process_time`) of a
batch of calls; stages are interleaved within each repetition so that background load hits
them alike. No target: this explains `bench.soap_delivery`, it does not gate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.soap_delivery import _policies
from services.contracts import policy_xml
from services.contracts.messages import PolicyStatus, decode, encode
from services.contracts.policy import PolicyMessage
from services.prem import store
from services.prem.backends.memory import MemoryBackend
from services.prem.config import PremSettings
from services.prem.core.flowtable import compile_policies
from services.prem.core.policyset import apply_message
from services.prem.core.reconcile import plan
from services.prem.enforcer import Enforcer
from services.soap_gateway.checks import check_call
from services.soap_gateway.config import GatewaySettings

BATCH = 50


def _document(node: str, direction: str, version: int) -> bytes:
    message = PolicyMessage(
        node=node,
        mobile_router="mr1",
        direction=direction,
        version=version,
        operation=_policies(),
    )
    return policy_xml.render(message)


def _model_by_model(data: bytes) -> PolicyMessage:
    """What `policy_xml.parse` did for every document before the one-call validation."""
    root = policy_xml._parse_tree(data, max_bytes=policy_xml.DEFAULT_MAX_BYTES)
    policy_xml._check_policy_count(root, policy_xml.DEFAULT_MAX_POLICIES)
    policy_xml._check_schema(root)
    return policy_xml._message(root)


class Worker:
    """An HA worker's enforcer on the memory back end, fed ever newer versions."""

    def __init__(self, directory: Path) -> None:
        self.settings = PremSettings.model_validate(
            {
                "node": "ha1",
                "role": "ha",
                "mobile_router": "mr1",
                "backend": "memory",
                "table_base": 3000,
                "state_file": str(directory / "ha1-state.json"),
                "bids": [{"bid": 1}, {"bid": 2}],
            }
        )
        self.enforcer = Enforcer(self.settings, MemoryBackend())
        self.version = 0

    def next_document(self) -> bytes:
        self.version += 1
        return _document("ha1", "downlink", self.version)


def stages(worker: Worker) -> dict[str, Callable[[], object]]:
    """Each stage as a call; documents are made outside the timed calls."""
    gateway = GatewaySettings.model_validate(
        {"mobile_routers": [{"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"}]}
    )
    down = _document("ha1", "downlink", 5).decode()
    up = _document("mr1", "uplink", 5).decode()
    sample = worker.next_document()
    message = policy_xml.parse(sample)
    state = worker.enforcer.state
    desired = compile_policies(message.operation.policies)  # type: ignore[union-attr]
    status = worker.enforcer.handle(sample).status
    status_json = encode(status)
    outcome = apply_message(state, message, worker.settings)
    spare = worker.settings.state_file.with_name("spare-state.json")
    # Enough for the 10 repetitions until `main` calls this again, made outside the timing.
    documents = iter([worker.next_document() for _ in range(BATCH * 10)])

    def handle() -> object:
        return worker.enforcer.handle(next(documents))

    def enforce() -> object:
        backend = worker.enforcer.backend
        changes = plan(desired, backend.read())
        backend.apply(desired, changes)
        return changes

    return {
        "gateway: check_call (both documents)": lambda: check_call(
            gateway, "install", "mr1", down, up
        ),
        "gateway: a status decoded": lambda: decode(PolicyStatus, status_json),
        "worker: Enforcer.handle whole": handle,
        "worker: parse": lambda: policy_xml.parse(sample),
        "worker: parse, model by model (before)": lambda: _model_by_model(sample),
        "worker: apply_message": lambda: apply_message(state, message, worker.settings),
        "worker: compile + plan + apply (memory)": enforce,
        "worker: state JSON": outcome.state.model_dump_json,
        "worker: store.save (CPU; fsync wait excluded)": lambda: store.save(spare, outcome.state),
        "worker: status encoded": lambda: encode(status),
        "worker: status built": lambda: PolicyStatus.model_validate(status.model_dump()),
    }


def _cpu_us(call: Callable[[], object]) -> float:
    started = time.process_time()
    for _ in range(BATCH):
        call()
    return (time.process_time() - started) / BATCH * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=15, help="repetitions (default 15)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="delivery-cpu-") as tmp:
        worker = Worker(Path(tmp))
        calls = stages(worker)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for rep in range(args.reps):
            if rep % 10 == 0 and rep:
                calls = stages(worker)  # fresh documents for the whole handle
            names = list(calls)
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(_cpu_us(calls[name]))
    fast = samples["worker: parse"]
    slow = samples["worker: parse, model by model (before)"]
    print(f"CPU per call, median of {args.reps} repetitions of {BATCH} calls (us):")
    for name, values in samples.items():
        print(f"  {name:48s} {statistics.median(values):8.0f}")
    ratio = statistics.median(s / f for s, f in zip(slow, fast, strict=True))
    print(f"parse: model by model / one call = {ratio:.2f}x (median of paired ratios)")
    whole = statistics.median(samples["worker: Enforcer.handle whole"])
    gateway = statistics.median(samples["gateway: check_call (both documents)"])
    gateway += 2 * statistics.median(samples["gateway: a status decoded"])
    print(
        f"document work per delivery: gateway {gateway / 1000:.2f} ms, two workers "
        f"{2 * whole / 1000:.2f} ms (compare bench.soap_delivery's CPU per delivery by role)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
