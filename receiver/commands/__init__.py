"""The verbs of ``edge-receiver``, one module each: ``HELP``, ``add_arguments(parser)``, ``run(args)``."""
