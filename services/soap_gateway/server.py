"""Running the gateway: the bus link, the core and the SOAP server (soap_server.py), started
and stopped in order.
"""

from __future__ import annotations

import gc
import logging
import threading

from services.contracts.settings import BrokerSettings
from services.runtime import on_signals
from services.soap_gateway.buslink import BusLink
from services.soap_gateway.config import GatewaySettings, access_warnings
from services.soap_gateway.metered import MeteredCore
from services.soap_gateway.metrics import GatewayMetrics
from services.soap_gateway.soap_server import SoapServer, quiet_client_faults
from services.soap_gateway.tracker import Tracker
from services.soap_gateway.udp import UdpServer

log = logging.getLogger(__name__)


class GatewayServer:
    """One gateway: `start()` connects and serves in threads, `stop()` ends both."""

    def __init__(self, settings: GatewaySettings, broker: BrokerSettings) -> None:
        self.settings = settings
        self.tracker = Tracker()
        self.metrics = GatewayMetrics(settings.name)
        self.link = BusLink(
            broker, settings.name, settings.nodes(), self.tracker, metrics=self.metrics
        )
        self.core = MeteredCore(settings, self.tracker, self.link, self.metrics)
        self.soap = SoapServer(settings, self.core, name=settings.name)

    @property
    def udp(self) -> UdpServer | None:
        """The SOAP over UDP server, if `udp_port` is set."""
        return self.soap.udp

    @property
    def port(self) -> int:
        """The port actually bound (settings may ask for 0: any free port)."""
        return self.soap.port

    def start(self) -> None:
        """Serve metrics, connect to the broker, bind, serve SOAP, then say so on the bus;
        raise `soap_server.ListenError` when the SOAP sockets cannot be opened."""
        for warning in access_warnings(
            self.settings, tls=self.soap.tls, what=f"gateway {self.settings.name}"
        ):
            log.warning("%s", warning)
        # Objects made so far (schemas, the WSDL, pydantic models) live as long as the process:
        # keep them out of the collector's full passes, which would stall every call.
        gc.freeze()
        self.link.start(self.settings.metrics_listen)
        self.soap.bind()
        self.soap.start()
        self.link.online()
        log.info(
            "gateway %s: serving SOAP on %s (WSDL at ?wsdl)", self.settings.name, self.soap.url
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
        self.soap.stop()
        self.link.close()

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        done = threading.Event()
        quiet_client_faults()
        on_signals(self.settings.name, done.set)
        self.start()
        try:
            done.wait()
        finally:
            self.stop()
