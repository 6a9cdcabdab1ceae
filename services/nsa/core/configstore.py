"""The configuration each mobile router is decided with, and the last-good rule for updates.

Three sources: the settings file (profiles, decision settings, initial preferences and rules),
the operator's retained rules (`operator/rules`) and each router's retained preferences
(`mr/<mr>/preferences`). A retained document replaces the file's part (rules: all of them;
preferences: that router's entries); an empty one hands the part back to the file. A document
that does not validate, or names a class no profile defines, is refused with the dotted field
of each problem and the previous version keeps deciding.

Each router gets its own `NsaConfig` holding only the global entries and its own, so that
looking up weights does not scan every router's preferences (thousands of them at scale);
routers without entries of their own share one object.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from services.contracts.errors import InvalidInput, Problem
from services.contracts.messages import Envelope, decode
from services.contracts.settings import validation_problems
from services.nsa.core.config import NsaConfig, OperatorRules, Preferences
from services.nsa.core.documents import PreferencesDocument, RulesDocument

DocumentT = TypeVar("DocumentT", bound=Envelope)


class ConfigStore:
    """The base configuration plus the retained overrides; `config_for` is cached."""

    def __init__(self, base: NsaConfig) -> None:
        self._base = base
        self._rules: OperatorRules | None = None
        self._preferences: dict[str, tuple[Preferences, ...]] = {}
        self._cache: dict[str, NsaConfig] = {}
        self._shared: NsaConfig | None = None

    @property
    def base(self) -> NsaConfig:
        """The configuration from the settings file."""
        return self._base

    def config_for(self, mobile_router: str) -> NsaConfig:
        """The configuration `mobile_router` is decided with now."""
        found = self._cache.get(mobile_router)
        if found is not None:
            return found
        own = self._preferences.get(mobile_router)
        if own is None:
            own = tuple(p for p in self._base.preferences if p.mobile_router == mobile_router)
        if not own:
            if self._shared is None:
                self._shared = self._compose(())
            config = self._shared
        else:
            config = self._compose(own)
        self._cache[mobile_router] = config
        return config

    def set_base(self, base: NsaConfig) -> list[str]:
        """A reloaded settings file. Retained overrides that no longer fit (a class they name
        was removed) are dropped; returns a description of each dropped override."""
        self._base = base
        dropped: list[str] = []
        if self._rules is not None and not self._fits(rules=self._rules):
            dropped.append("the retained operator rules (they name a class no profile defines)")
            self._rules = None
        for router, entries in list(self._preferences.items()):
            if not self._fits(entries=entries):
                dropped.append(f"the retained preferences of {router} (unknown class)")
                del self._preferences[router]
        self._invalidate()
        return dropped

    def set_rules(self, payload: bytes) -> None:
        """Apply a retained rules document (empty: back to the file's); raises InvalidInput
        naming each problem's field and keeps the current rules."""
        if not payload:
            self._rules = None
            self._invalidate()
            return
        document = _decode(RulesDocument, payload)
        self._check(rules=document.rules)
        self._rules = document.rules
        self._invalidate()

    def set_preferences(self, mobile_router: str, payload: bytes) -> None:
        """Apply a router's retained preferences (empty: back to the file's); raises
        InvalidInput naming each problem's field and keeps the current ones."""
        if not payload:
            self._preferences.pop(mobile_router, None)
            self._cache.pop(mobile_router, None)
            return
        document = _decode(PreferencesDocument, payload)
        if document.mobile_router != mobile_router:
            raise InvalidInput(
                [
                    Problem(
                        f"is {document.mobile_router!r}, the topic's router is {mobile_router!r}",
                        field="mobile_router",
                    )
                ]
            )
        known = {p.name for p in self._base.profiles}
        problems = [
            Problem(f"no profile defines class {name!r}", field=f"entries.{index}.classes.{name}")
            for index, entry in enumerate(document.entries)
            for name in entry.classes
            if name not in known
        ]
        if problems:
            raise InvalidInput(problems)
        self._check(entries=document.entries)
        self._preferences[mobile_router] = document.entries
        self._cache.pop(mobile_router, None)

    def _compose(
        self,
        entries: tuple[Preferences, ...],
        rules: OperatorRules | None = None,
    ) -> NsaConfig:
        base = self._base
        shared = tuple(p for p in base.preferences if p.mobile_router is None)
        return NsaConfig(
            settings=base.settings,
            profiles=base.profiles,
            preferences=(*shared, *entries),
            rules=rules or self._rules or base.rules,
        )

    def _check(
        self, *, entries: tuple[Preferences, ...] = (), rules: OperatorRules | None = None
    ) -> None:
        try:
            self._compose(entries, rules)
        except ValidationError as exc:
            raise InvalidInput(validation_problems(exc)) from exc

    def _fits(
        self, *, entries: tuple[Preferences, ...] = (), rules: OperatorRules | None = None
    ) -> bool:
        try:
            self._check(entries=entries, rules=rules)
        except InvalidInput:
            return False
        return True

    def _invalidate(self) -> None:
        self._cache.clear()
        self._shared = None


def _decode(model: type[DocumentT], payload: bytes) -> DocumentT:
    try:
        return decode(model, payload)
    except ValidationError as exc:
        raise InvalidInput(validation_problems(exc)) from exc
