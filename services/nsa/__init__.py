"""The NSA (Network Selection Algorithm): decides each flow class's BID for every mobile router
and delivers the resulting policies.

Two layers, imports pointing one way only (enforced by import-linter, see pyproject.toml):

- `core/`: pure code, time as an argument: the decision itself and the state machine around it
  (see `services.nsa.core`). No socket, thread, clock, process or broker client.
- the shell, here: `settings` (reading the settings file and the files it names), `buslink`
  (the main MQTT connection, on `services.runtime`), `metrics_receiver` (the metrics
  connection, in a child process), `inbox` and `items` (the bounded hand-off to the decision
  thread), `delivery` (zeep client pool, or a dry run), `service` (the decision thread,
  wiring, signals, reload: `multinet nsa run`), `explain_cli` (`multinet nsa explain`).
"""
