"""Configuration changes at run time: retained preferences and operator rules, and a
reloaded settings file.

A document that does not validate is refused and the last good one stays (`configstore`).
Preferences concern one router, which is decided again; operator rules and a reload concern
every router. A reload adopts what can change while running and names the keys that need a
restart (their running values are kept).
"""

from __future__ import annotations

import logging

from services.contracts.errors import InvalidInput
from services.nsa.core.agenda import Agenda
from services.nsa.core.config import NsaConfig
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.inputs import Trigger, TriggerKind
from services.nsa.core.routes import Raw
from services.nsa.core.settings import NsaServiceSettings

log = logging.getLogger(__name__)

#: The keys of the `[nsa]` table a running replica cannot adopt.
RESTART_KEYS = (
    "name",
    "replicas",
    "replica",
    "scheme",
    "mobile_routers",
    "gateway",
    "coordination",
)


class ConfigInputs:
    """Applies preferences, operator rules and reloads to the configuration store."""

    def __init__(self, agenda: Agenda, store: ConfigStore) -> None:
        self.agenda = agenda
        self.store = store

    def preferences(self, raw: Raw, now: float) -> None:
        """A router's retained preferences (an empty payload: back to the file's)."""
        try:
            self.store.set_preferences(raw.key, raw.payload)
        except InvalidInput as exc:
            self.agenda.stats.refused += 1
            log.warning(
                "%s: refused preferences on %s, keeping the last good ones: %s",
                raw.key,
                raw.topic,
                exc,
            )
            return
        log.info("%s: preferences %s", raw.key, "updated" if raw.payload else "from the file")
        trigger = Trigger(kind=TriggerKind.CONFIG, detail="preferences")
        self.agenda.waiting(self.agenda.slots[raw.key], trigger, now)

    def rules(self, raw: Raw, now: float) -> None:
        """The retained operator rules (an empty payload: back to the file's)."""
        try:
            self.store.set_rules(raw.payload)
        except InvalidInput as exc:
            self.agenda.stats.refused += 1
            log.warning(
                "refused operator rules on %s, keeping the last good ones: %s", raw.topic, exc
            )
            return
        log.info("operator rules %s", "updated" if raw.payload else "from the file")
        self.agenda.reconfigured(now, "operator rules")

    def reload(self, settings: NsaServiceSettings, config: NsaConfig, now: float) -> list[str]:
        """Adopt a reloaded settings file; returns the keys that need a restart (kept)."""
        running = self.agenda.settings
        restart = [key for key in RESTART_KEYS if getattr(settings, key) != getattr(running, key)]
        self.agenda.settings = settings.model_copy(
            update={key: getattr(running, key) for key in restart}
        )
        for dropped in self.store.set_base(config):
            log.warning("reload: dropped %s", dropped)
        self.agenda.reconfigured(now, "settings file reloaded")
        return restart
