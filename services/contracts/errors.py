"""The small set of typed errors services raise, each carrying structured data.

Callers decide by type, and the structured fields (policy id, field, line) let a status message
or a SOAP Fault say exactly what was wrong without parsing strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.contracts.echo import FIELD_LIMIT, ID_LIMIT, REASON_LIMIT, echo


class MultinetError(Exception):
    """Base of every error multinet raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One reason for refusing input: where it is and why.

    The texts are echoes (`services.contracts.echo`): a policy id or reason that repeats the
    refused input is kept printable and short, so that a Problem can always be logged, put in
    a status message or a SOAP Fault, whatever the input was.
    """

    reason: str
    policy_id: str | None = None
    field: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", echo(self.reason, REASON_LIMIT))
        if self.policy_id is not None:
            object.__setattr__(self, "policy_id", echo(self.policy_id, ID_LIMIT))
        if self.field is not None:
            object.__setattr__(self, "field", echo(self.field, FIELD_LIMIT))

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.policy_id is not None:
            where.append(f"policy {self.policy_id!r}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class InvalidInput(MultinetError):  # noqa: N818 - the name reads as what happened
    """Input refused as a whole; `problems` lists every reason found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid input")


class PolicyDocumentError(InvalidInput):
    """A policy document that is not well-formed, not valid, or over a limit."""


class PolicyRefused(InvalidInput):
    """A valid document the receiving node cannot accept (stale version, unknown BID, ...)."""


class ConfigError(InvalidInput):
    """A settings file or environment override that does not validate."""


@dataclass
class KernelError(MultinetError):
    """A kernel operation failed; nothing of the batch it belonged to stays applied."""

    operation: str
    detail: str
    errno: int | None = None

    def __str__(self) -> str:
        code = f" (errno {self.errno})" if self.errno is not None else ""
        return f"{self.operation} failed{code}: {self.detail}"
