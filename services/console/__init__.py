"""The operator console: every mobile router, link, binding and flow class on one page.

`multinet console run` subscribes read-only to the bus and serves web pages: the fleet (each
mobile router with its HA, its services online and its alerts) and one page per router (links
with sparklines, bindings, per class the BID the NSA chose beside the BIDs the PREM workers
enforce, the decision log), updated live by server-sent events.

Modules: `core` (the pure picture of the fleet, fed parsed messages and the time), `auth`
(users, sessions, CSRF), `web` (the Starlette app: pages, JSON, event streams), `service` (the
bus subscription and the HTTP server), `config`, `metrics`, `cli`.
"""
