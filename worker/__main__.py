"""`python -m refunddesk.worker`: one worker process, as the service starts it."""

from refunddesk.worker.process import main

main()
