"""The base of every NSA model: frozen, unknown keys refused, and a loader that names fields.

Frozen so that a state or a configuration handed to `decide` cannot change under it; unknown
keys refused so that a misspelt option is an error, not a silently ignored default.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from services.contracts.errors import InvalidInput
from services.contracts.settings import validation_problems


class Frozen(BaseModel):
    """A validated, immutable value."""

    model_config = ConfigDict(frozen=True, extra="forbid")


ModelT = TypeVar("ModelT", bound=BaseModel)


def load(model: type[ModelT], data: Any, *, where: str = "") -> ModelT:
    """Validate `data` (a mapping, as read from JSON/TOML/YAML) into `model`.

    Raises InvalidInput whose problems name the dotted field of every error (prefixed with
    `where`, e.g. "nsa"), so the caller can refuse the update and keep the last good one.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_problems(exc, where)) from exc
