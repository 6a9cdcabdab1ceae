"""`multinet doctor`: what this kernel can do, and whether this node can run its role.

Prints the probe of `services.capabilities` as a table (like `docker info`): each feature with
yes or no, and for each no the kernel option that is missing and what the kernel said. Then a
verdict per role; the exit status is 1 when the asked role (every role, by default) cannot
run here, so deployment scripts can stop before starting a node that would fail.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from services.capabilities import (
    FEATURES,
    PIPE_KINDS,
    Capabilities,
    Group,
    MissingCapability,
    choose_pipe_kind,
    offered_pipe_kinds,
)

ROLES = ("mr", "ha", "testbed")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one role can run on this kernel, and why (or why not)."""

    role: str
    ok: bool
    detail: str


def _enforcement(caps: Capabilities) -> str | None:
    """Why a PREM worker cannot enforce here, or None when it can."""
    if not caps.has("fwmark rules"):
        return caps.check("fwmark rules").missing_text
    if not (caps.has("nf_tables") or caps.has("xtables mark")):
        return (
            f"{caps.check('nf_tables').missing_text} and {caps.check('xtables mark').missing_text}"
        )
    return None


def _mr(caps: Capabilities, pipe: str) -> Verdict:
    problem = _enforcement(caps)
    if problem is not None:
        return Verdict("mr", False, problem)
    try:
        kind = choose_pipe_kind(pipe, caps)
    except MissingCapability as exc:
        return Verdict("mr", False, str(exc))
    return Verdict("mr", True, f"PREM and MCoA agent can run; pipe kind {kind}")


def _ha(caps: Capabilities, pipe: str) -> Verdict:
    problem = _enforcement(caps)
    if problem is not None:
        return Verdict("ha", False, problem)
    try:
        kinds = offered_pipe_kinds(pipe, caps)
    except MissingCapability as exc:
        return Verdict("ha", False, str(exc))
    return Verdict(
        "ha", True, f"PREM and MCoA agent can run; pipe kinds offered: {', '.join(kinds)}"
    )


def _testbed(caps: Capabilities, pipe: str) -> Verdict:
    if not caps.has("veth"):
        return Verdict("testbed", False, caps.check("veth").missing_text)
    if not caps.has("nf_tables"):
        return Verdict("testbed", False, caps.check("nf_tables").missing_text)
    mr = _mr(caps, pipe)
    if not mr.ok:
        return Verdict("testbed", False, mr.detail)
    return Verdict("testbed", True, f"the namespace test bed can run; {mr.detail.split('; ')[1]}")


_CHECKS: dict[str, Callable[[Capabilities, str], Verdict]] = {
    "mr": _mr,
    "ha": _ha,
    "testbed": _testbed,
}


def verdicts(caps: Capabilities, roles: tuple[str, ...], pipe: str = "auto") -> list[Verdict]:
    """The verdict of each role in `roles` (names from ROLES) with pipe setting `pipe`."""
    return [_CHECKS[role](caps, pipe) for role in roles]


def render(caps: Capabilities, results: list[Verdict]) -> str:
    """The table `multinet doctor` prints."""
    where = "a scratch network namespace" if caps.scratch else "this namespace"
    lines = [
        f"Kernel: {caps.kernel}",
        f"Probed in {where} in {caps.seconds * 1000:.0f} ms"
        + (f" ({caps.note})" if caps.note else ""),
    ]
    width = max(len(f.name) for f in FEATURES)
    for group in Group:
        lines += ["", f"{group.value}:"]
        for check in caps.checks:
            if check.feature.group is not group:
                continue
            mark = "yes" if check.present else "no "
            line = f"  {check.feature.name:<{width}}  {mark}  {check.feature.what}"
            if not check.present:
                line += f"; missing {check.feature.config}: {check.detail}"
            lines.append(line)
    lines += ["", "roles:"]
    for verdict in results:
        lines.append(f"  {verdict.role:<8} {'ok  ' if verdict.ok else 'NO  '} {verdict.detail}")
    return "\n".join(lines)


def as_json(caps: Capabilities, results: list[Verdict]) -> str:
    """The same as `render`, for programs."""
    return json.dumps(
        {
            "kernel": caps.kernel,
            "scratch_namespace": caps.scratch,
            "seconds": round(caps.seconds, 3),
            "note": caps.note,
            "features": {
                c.feature.name: {
                    "present": c.present,
                    "group": c.feature.group.name.lower(),
                    "config": c.feature.config,
                    "detail": c.detail,
                }
                for c in caps.checks
            },
            "pipe_kinds": list(caps.pipe_kinds()),
            "roles": {v.role: {"ok": v.ok, "detail": v.detail} for v in results},
        },
        indent=2,
    )


def main(role: str, pipe: str, *, json_output: bool) -> int:
    """Probe, print, and exit 0 when the asked role(s) can run here, else 1."""
    from services.capabilities import probe

    if os.geteuid() != 0:
        print("multinet doctor: probing the kernel needs root (it makes a scratch namespace)")
        return 2
    caps = probe()
    roles = ROLES if role == "all" else (role,)
    results = verdicts(caps, roles, pipe)
    print(as_json(caps, results) if json_output else render(caps, results))
    return 0 if all(v.ok for v in results) else 1


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`multinet doctor` in the command's parser."""
    doctor = sub.add_parser(
        "doctor",
        help="what this kernel can do (pipe kinds, netfilter, qdiscs, link types) and whether "
        "this node can run its role",
        description="Try every kernel feature multinet may use in a scratch network namespace "
        "and print a table: yes, or no with the kernel option that is missing and what the "
        "kernel said. Exit status: 0 when the role(s) can run here, 1 when not, 2 without root.",
    )
    doctor.add_argument(
        "--role",
        choices=[*ROLES, "all"],
        default="all",
        help="the role to judge: mr, ha (PREM + MCoA agent), testbed (the namespace test bed); "
        "default all",
    )
    doctor.add_argument(
        "--pipe",
        choices=["auto", *PIPE_KINDS],
        default="auto",
        help="the pipe setting to judge (as the MCoA agent's `pipe`); default auto",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON instead of the table")
    doctor.set_defaults(func=lambda args: main(args.role, args.pipe, json_output=args.json))
