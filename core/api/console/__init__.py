"""The operator console: the book, its protection and the system on one page of ``vigil api``."""

from core.api.console.routes import register

__all__ = ["register"]
