"""Fixtures of the security battery: the deployment's secured broker (for the ACL rows) and
live PREM workers in namespaces of their own (see `tests/security/live.py`)."""

from __future__ import annotations

from tests.deploy.conftest import (  # noqa: F401 - fixtures, registered by being imported
    broker_users,
    broker_version,
    make_secured_broker,
    secured_broker,
)
