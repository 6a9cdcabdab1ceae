"""Running the gateway: the bus link, the core and the WSGI stack on cheroot's threaded server.

cheroot serves each connection on a pool thread with a socket timeout, so a slow or silent
client holds one thread for at most `socket_timeout_s`. Its own body limit is a backstop
above the guard's, which answers with a SOAP Fault instead of plain text.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from cheroot import wsgi

from services.contracts.settings import BrokerSettings
from services.soap_gateway.buslink import BusLink
from services.soap_gateway.config import GatewaySettings
from services.soap_gateway.core import GatewayCore
from services.soap_gateway.tracker import Tracker
from services.soap_gateway.wsgi import make_wsgi_app

log = logging.getLogger(__name__)


class GatewayServer:
    """One gateway: `start()` connects and serves in a thread, `stop()` ends both."""

    def __init__(self, settings: GatewaySettings, broker: BrokerSettings) -> None:
        self.settings = settings
        self.tracker = Tracker()
        self.link = BusLink(broker, settings.name, settings.nodes(), self.tracker)
        self.core = GatewayCore(settings, self.tracker, self.link)
        self.http: Any = wsgi.Server(
            (settings.host, settings.port),
            make_wsgi_app(self.core),
            numthreads=settings.threads,
            timeout=int(max(1, settings.socket_timeout_s)),
            shutdown_timeout=5,
        )
        self.http.max_request_body_size = 2 * settings.max_body_bytes
        self.http.max_request_header_size = 64 * 1024
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (settings may ask for 0: any free port)."""
        return int(self.http.bind_addr[1])

    def start(self) -> None:
        """Connect to the broker, bind, and serve HTTP in a named background thread."""
        self.link.start()
        self.http.prepare()
        self._thread = threading.Thread(
            target=self.http.serve, name=f"soap-gateway-{self.settings.name}", daemon=True
        )
        self._thread.start()
        log.info(
            "gateway %s: serving SOAP on http://%s:%d/ (WSDL at ?wsdl)",
            self.settings.name,
            self.settings.host,
            self.port,
        )

    def stop(self) -> None:
        """Stop serving and disconnect."""
        self.http.stop()
        if self._thread is not None:
            self._thread.join(10)
        self.link.close()

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
