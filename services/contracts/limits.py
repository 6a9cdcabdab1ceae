"""Sizes every part of the system agrees on, derived from the policy document limit.

The largest message the bus must carry is a policy document (`policy_xml.DEFAULT_MAX_BYTES`).
The broker refuses anything larger before it reads it (deploy/mosquitto/mosquitto.conf:
`message_size_limit`, `max_packet_size`), and every MQTT 5 client announces the same maximum
packet size at CONNECT, so the broker never sends it more: no process spends memory on an
oversized message, whoever publishes it.
"""

from __future__ import annotations

from services.contracts.policy_xml import DEFAULT_MAX_BYTES

#: The largest payload the broker accepts: one policy document at its size limit.
MAX_MESSAGE_BYTES = DEFAULT_MAX_BYTES
#: Room for the rest of a PUBLISH packet: fixed header, topic (at most 65,535 bytes), packet
#: id and properties.
PACKET_OVERHEAD_BYTES = 64 * 1024
#: The largest MQTT packet the broker accepts and each client announces.
MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + PACKET_OVERHEAD_BYTES
