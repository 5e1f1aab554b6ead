"""Service plumbing shared by the agent's daemon and the receiver.

- :mod:`.schema`: typed YAML configuration values, errors with file, line and key, "did you mean".
- :mod:`.logs`: structlog set-up, console / JSON / journald output, the ``logging`` config section.
- :mod:`.mqtt`: the ``mqtt`` config section and a paho client set up the same way on both sides.
- :mod:`.supervise`: sd_notify (READY, WATCHDOG, STATUS, STOPPING), the watchdog over stage heartbeats.
- :mod:`.cli`: a console script's ``main``: one clear line per error, never a traceback for bad input.

It imports only the codec (:mod:`agent.wire`) and the error tree (:mod:`agent.errors`); never a stage of the
agent or anything of the receiver (``tests/test_layout.py`` enforces it).
"""
