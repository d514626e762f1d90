"""The process shell: the `vigil` command line, supervision of the native stack, and the demo,
chaos and duplicate-race harnesses. It composes the engine (core), the Celery app (tasks) and
the paper exchange (sim); nothing in the engine imports it."""
