"""services.netns: entering a namespace (pyroute2's setns) and running a callable inside one."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable

import pytest

from services import netns

pytestmark = pytest.mark.kernel


def interface_names() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def test_call_in_runs_inside_the_namespace(make_netns: Callable[[str], str]) -> None:
    name = make_netns("enter")
    assert netns.call_in(name, interface_names) == ["lo"]
    assert len(interface_names()) >= 1  # the caller stayed where it was


def test_a_missing_namespace_is_a_clear_error_and_is_not_created(
    make_netns: Callable[[str], str],
) -> None:
    make_netns("root")  # root and ip present (skips or fails as the other kernel tests)
    missing = f"mnt-missing-{uuid.uuid4().hex[:6]}"
    with pytest.raises(netns.NetnsCallError, match=f"setns into {missing}: No such file"):
        netns.call_in(missing, interface_names)
    assert not netns.exists(missing)


def test_a_file_that_is_no_namespace_is_a_clear_error(make_netns: Callable[[str], str]) -> None:
    make_netns("root")
    name = f"mnt-file-{uuid.uuid4().hex[:6]}"
    path = os.path.join(netns.NETNS_DIR, name)
    with open(path, "w"):
        pass
    try:
        with pytest.raises(netns.NetnsCallError, match=f"setns into {name}: Invalid argument"):
            netns.call_in(name, interface_names)
    finally:
        os.unlink(path)
