"""The worker: the pipeline over the inbound spool, in a process of its own.

- process.py: what runs inside the worker's process (`python -m refunddesk.worker`).
- supervisor.py: the service's side (start, ring, watch the budget, restart, stop).
- doorbell.py: the pipes between them.
- watchdog.py: the service's guard over a worker stuck on one message past its budget
  (the budget itself is the pipeline's: intake/budget.py).
- in_hand.py: the crash record beside the store (which rows the worker holds).

docs/worker.md has the picture.
"""
