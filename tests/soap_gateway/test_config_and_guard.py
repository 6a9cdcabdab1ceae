"""Settings validate like the PREM's; the body guard refuses before spyne parses anything."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pydantic import ValidationError

from services.cli import main
from services.soap_gateway.core import GatewayCore
from services.soap_gateway.service import make_application
from services.soap_gateway.tracker import Tracker
from services.soap_gateway.wsgi import BodyGuard, RefusalLog, WsdlFilter, make_wsgi_app
from tests.soap_gateway.helpers import gateway_settings

CONFIG = """
[soap_gateway]
port = 8080
ack_deadline_s = 5
mobile_routers = [{ id = "mr1", ha_node = "ha1", mr_node = "mr1" }]
[broker]
topic_root = "multinet/v1"
"""


def test_check_config_validates_the_gateway_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG)
    assert main(["check-config", str(path)]) == 0
    assert "OK (soap_gateway)" in capsys.readouterr().out
    path.write_text(CONFIG.replace("ack_deadline_s = 5", "ack_deadline_s = 0\nbogus = 1"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "soap_gateway.ack_deadline_s" in err
    assert "soap_gateway.bogus" in err


def test_soap_gateway_command_refuses_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.replace('mr_node = "mr1"', 'mr_node = "ha1"'))
    assert main(["soap-gateway", "--config", str(path)]) == 2
    assert "ha_node and mr_node are both 'ha1'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("routers", "text"),
    [
        ([], "at least 1"),
        ([{"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"}] * 2, "declared twice"),
        (
            [
                {"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"},
                {"id": "mr2", "ha_node": "ha1", "mr_node": "mr1"},
            ],
            "is the MR of",
        ),
        (
            [
                {"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"},
                {"id": "mr2", "ha_node": "mr1", "mr_node": "x"},
            ],
            "",
        ),
    ],
)
def test_mobile_router_table_rules(routers: list[dict[str, str]], text: str) -> None:
    if not text:
        gateway_settings(mobile_routers=routers)  # an HA node may be any node but an MR
        return
    with pytest.raises(ValidationError, match=text):
        gateway_settings(mobile_routers=routers)


class _NoBus:
    def connected(self) -> bool:
        return False

    def publish(self, node: str, document: bytes) -> bool:
        raise AssertionError("nothing may be published")


def _post(app: Any, body: bytes, *, length: str | None = None) -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "text/xml; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)) if length is None else length,
        "wsgi.input": io.BytesIO(body),
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    status: list[str] = []
    out = b"".join(app(environ, lambda s, headers, *rest: status.append(s)))
    return status[0], out


def _fault_code(body: bytes) -> str:
    code = etree.fromstring(body).find(".//faultcode")
    assert code is not None
    return str(code.text).split(":", 1)[1]


def _bomb(depth: int) -> bytes:
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, depth + 1)
    )
    return (
        f'<?xml version="1.0"?><!DOCTYPE e [{entities}]>'
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:g="urn:multinet:soap-gateway:1"><s:Body><g:GetStatus>'
        f"<g:mobile_router>&l{depth};</g:mobile_router></g:GetStatus></s:Body></s:Envelope>"
    ).encode()


APP = make_wsgi_app(GatewayCore(gateway_settings(), Tracker(), _NoBus()))


@pytest.mark.parametrize(
    ("body", "length", "status", "code"),
    [
        (b"<x/>", "", "411 Length Required", "Client.LengthRequired"),
        (b"x" * 300_000, None, "413 Content Too Large", "Client.RequestTooLarge"),
        (b"<x/>", "400", "400 Bad Request", "Client.IncompleteRequest"),
        ("<x>é</x>".encode("utf-16"), None, "500 Internal Server Error", "Client.NotUtf8"),
        (_bomb(9), None, "500 Internal Server Error", "Client.DTDNotAllowed"),
        (_bomb(1), None, "500 Internal Server Error", "Client.DTDNotAllowed"),
    ],
)
def test_guard_refuses_with_a_soap_fault(
    body: bytes, length: str | None, status: str, code: str
) -> None:
    got_status, out = _post(APP, body, length=length)
    assert (got_status, _fault_code(out)) == (status, code)


def test_spyne_behind_the_guard_never_expands_an_entity_bomb() -> None:
    """Defence in depth: even without the guard, the parser refuses to expand the bomb."""
    spyne_only: Any = APP
    while isinstance(spyne_only, (RefusalLog, BodyGuard, WsdlFilter)):
        spyne_only = spyne_only.app  # down to spyne's own WSGI application
    started = time.monotonic()
    status, out = _post(spyne_only, _bomb(9))
    assert time.monotonic() - started < 2
    assert status.startswith("500")
    assert _fault_code(out) == "Client.XMLSyntaxError"
    assert b"lollol" not in out


def test_application_builds_a_wsdl_with_our_operations() -> None:
    app = make_application(GatewayCore(gateway_settings(), Tracker(), _NoBus()))
    names = {m.operation_name for d in app.interface.service_method_map.values() for m in d}
    assert {"Install", "Update", "Flush", "GetStatus"} <= {str(n) for n in names}


def test_an_empty_body_is_a_fault_not_a_crash() -> None:
    from services.soap_gateway.wsgi import BodyGuard

    seen: list[str] = []

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        seen.append("app")
        return [b""]

    statuses: list[str] = []
    guard = BodyGuard(app, max_body_bytes=1024)
    body = b"".join(
        guard(
            {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO(b"")},
            lambda status, headers: statuses.append(status),
        )
    )
    assert statuses[0].startswith("500")
    assert b"Client.EmptyRequest" in body
    assert seen == []
