"""Fixtures for the broker security tests: the deployment tests' private mosquitto running the
shipped configuration (deploy/mosquitto: mosquitto.conf, acl, clientids, the client-id plugin
built from its shipped source) with the users made by the shipped password helper."""

from __future__ import annotations

from tests.deploy.conftest import (
    broker_users,
    broker_version,
    clientid_plugin,
    make_secured_broker,
    secured_broker,
)

__all__ = [
    "broker_users",
    "broker_version",
    "clientid_plugin",
    "make_secured_broker",
    "secured_broker",
]
