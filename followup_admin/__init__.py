"""followup's operator tool: ``python -m followup_admin --help``.

A synchronous command-line tool on kafka-python's admin, consumer and producer clients (and
the scheduler's case API), for what an operator does by hand: lay the topics out before the
first deploy, look at and replay dead letters after a fix, read consumer lag, see the cases.
It imports ``common`` and ``schemas``, never a service.
"""
