"""The SOAP service on the network: HTTP (or HTTPS) on cheroot's threaded server and, with
`udp_port`, SOAP over UDP, both running the one WSGI stack (wsgi.py) for a `core.SoapCalls`.

The gateway serves it for its bus delivery (`server.GatewayServer`); a standalone PREM daemon
serves it for its own node. cheroot serves each connection on a pool thread with a socket
timeout, so a slow or silent client holds one thread for at most `socket_timeout_s`. Its own
body limit is a backstop above the guard's, which answers with a SOAP Fault instead of plain
text. With `tls_cert` and `tls_key` set, cheroot's builtin SSL adapter serves HTTPS.

`bind` opens every socket first (in the namespace the process started in: a standalone daemon
enters its node's namespace afterwards), `start` serves in named threads, `stop` ends both.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from services.contracts.errors import MultinetError
from services.soap_gateway.config import GatewaySettings
from services.soap_gateway.core import SoapCalls
from services.soap_gateway.udp import UdpServer
from services.soap_gateway.wsgi import make_wsgi_app


def quiet_client_faults() -> None:
    """Leave refused calls to our own log: a refused call is the caller's mistake (a Fault,
    logged once with the caller at INFO by the WSGI stack), which spyne would log again with a
    traceback at ERROR. For a process's entry point (it sets a logger level)."""
    logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)


class ListenError(MultinetError):
    """The SOAP sockets cannot be opened (address in use, not local, ...)."""

    def __init__(self, address: str, error: OSError) -> None:
        self.address = address
        self.errno = error.errno
        super().__init__(f"cannot listen on {address}: {error.strerror or error}")


def ssl_adapter(settings: GatewaySettings) -> BuiltinSSLAdapter | None:
    """cheroot's TLS for `tls_cert` and `tls_key`, or None when they are not set."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        return BuiltinSSLAdapter(str(settings.tls_cert), str(settings.tls_key))
    except OSError as exc:  # ssl.SSLError is one too
        raise OSError(
            f"cannot load tls_cert {settings.tls_cert} and tls_key {settings.tls_key}: {exc}"
        ) from exc


class SoapServer:
    """The SOAP service of `calls` on `settings.host`: HTTP on `port`, UDP on `udp_port`.

    `name` names the threads (`soap-NAME`, `soap-udp-NAME`) and the UDP server's log lines.
    """

    def __init__(self, settings: GatewaySettings, calls: SoapCalls, *, name: str) -> None:
        self.settings = settings
        self.name = name
        self.http: Any = wsgi.Server(
            (settings.host, settings.port),
            make_wsgi_app(calls),
            numthreads=settings.threads,
            timeout=int(max(1, settings.socket_timeout_s)),
            shutdown_timeout=5,
        )
        self.http.max_request_body_size = 2 * settings.max_body_bytes
        self.http.max_request_header_size = 64 * 1024
        self.http.ssl_adapter = ssl_adapter(settings)
        # SOAP over UDP runs the very WSGI stack the HTTP server runs (udp.py).
        self.udp: UdpServer | None = None
        if settings.udp_port is not None:
            self.udp = UdpServer(
                self.http.wsgi_app,
                settings.host,
                settings.udp_port,
                max_datagram_bytes=settings.udp_max_datagram_bytes,
                threads=settings.threads,
                name=f"soap-udp-{name}",
            )
        self._thread: threading.Thread | None = None

    @property
    def tls(self) -> bool:
        """Whether HTTP is served over TLS."""
        return self.http.ssl_adapter is not None

    @property
    def port(self) -> int:
        """The HTTP port actually bound (settings may ask for 0: any free port)."""
        return int(self.http.bind_addr[1])

    @property
    def url(self) -> str:
        """Where the service answers (the WSDL is at `?wsdl`)."""
        return f"{'https' if self.tls else 'http'}://{self.settings.host}:{self.port}/"

    def bind(self) -> None:
        """Open the HTTP socket and the UDP one (if any); raise `ListenError`."""
        try:
            self.http.prepare()
        except OSError as exc:
            raise ListenError(f"{self.settings.host}:{self.settings.port}", exc) from exc
        if self.udp is not None:
            try:
                self.udp.bind()
            except OSError as exc:
                raise ListenError(f"{self.settings.host}:{self.udp.requested_port}", exc) from exc

    def start(self) -> None:
        """Serve HTTP in a named background thread, and UDP in its own (after `bind`)."""
        self._thread = threading.Thread(
            target=self.http.serve, name=f"soap-{self.name}", daemon=True
        )
        self._thread.start()
        if self.udp is not None:
            self.udp.start()

    def stop(self) -> None:
        """Stop serving UDP and HTTP, letting calls in progress answer."""
        if self.udp is not None:
            self.udp.stop()
        self.http.stop()
        if self._thread is not None:
            self._thread.join(10)
