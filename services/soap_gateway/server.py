"""Running the gateway: the bus link, the core and the WSGI stack on cheroot's threaded server.

cheroot serves each connection on a pool thread with a socket timeout, so a slow or silent
client holds one thread for at most `socket_timeout_s`. Its own body limit is a backstop
above the guard's, which answers with a SOAP Fault instead of plain text. With `tls_cert` and
`tls_key` set, cheroot's builtin SSL adapter serves HTTPS.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from services.contracts.settings import BrokerSettings
from services.soap_gateway.buslink import BusLink
from services.soap_gateway.config import GatewaySettings, access_warnings
from services.soap_gateway.metered import MeteredCore
from services.soap_gateway.metrics import GatewayMetrics
from services.soap_gateway.tracker import Tracker
from services.soap_gateway.udp import UdpServer
from services.soap_gateway.wsgi import make_wsgi_app

log = logging.getLogger(__name__)


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


class GatewayServer:
    """One gateway: `start()` connects and serves in a thread, `stop()` ends both."""

    def __init__(self, settings: GatewaySettings, broker: BrokerSettings) -> None:
        self.settings = settings
        self.tracker = Tracker()
        self.metrics = GatewayMetrics(settings.name)
        self.link = BusLink(
            broker,
            settings.name,
            settings.nodes(),
            self.tracker,
            dead_letter_counter=self.metrics.dead_letters,
        )
        self.metrics.watch_client(self.link.client)
        self.core = MeteredCore(settings, self.tracker, self.link, self.metrics)
        self.http: Any = wsgi.Server(
            (settings.host, settings.port),
            make_wsgi_app(self.core),
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
                name=f"soap-udp-{settings.name}",
            )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (settings may ask for 0: any free port)."""
        return int(self.http.bind_addr[1])

    def start(self) -> None:
        """Connect to the broker, bind, and serve HTTP in a named background thread."""
        tls = self.http.ssl_adapter is not None
        for warning in access_warnings(
            self.settings, tls=tls, what=f"gateway {self.settings.name}"
        ):
            log.warning("%s", warning)
        # Objects made so far (schemas, the WSDL, pydantic models) live as long as the process:
        # keep them out of the collector's full passes, which would stall every call.
        gc.freeze()
        self.metrics.serve(self.settings.metrics_listen)
        self.link.start()
        self.http.prepare()
        self._thread = threading.Thread(
            target=self.http.serve, name=f"soap-gateway-{self.settings.name}", daemon=True
        )
        self._thread.start()
        if self.udp is not None:
            self.udp.start()
        log.info(
            "gateway %s: serving SOAP on %s://%s:%d/ (WSDL at ?wsdl)",
            self.settings.name,
            "http" if self.http.ssl_adapter is None else "https",
            self.settings.host,
            self.port,
        )

    def stop(self) -> None:
        """Answer the calls still waiting for acknowledgements, stop serving, disconnect.

        A waiting call gets its answer now (`not-reached` for the nodes that did not
        acknowledge yet: GetStatus later says whether they applied) instead of a connection
        closed under it or a wait until the deadline.
        """
        waiting = self.tracker.release()
        if waiting:
            log.warning(
                "gateway %s: stopping; %d acknowledgement(s) no longer awaited",
                self.settings.name,
                waiting,
            )
        if self.udp is not None:
            self.udp.stop()
        self.http.stop()
        if self._thread is not None:
            self._thread.join(10)
        self.link.close()
        self.metrics.close()

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        done = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("gateway %s: signal %d, stopping", self.settings.name, signum)
            done.set()

        # A refused call is the caller's mistake (answered with a Fault and logged by the
        # service at INFO); spyne would log each with a traceback at ERROR.
        logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        try:
            done.wait()
        finally:
            self.stop()
