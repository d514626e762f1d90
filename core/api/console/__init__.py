"""The operator console: the book, its protection and the system on one page of ``vigil api``."""

from core.api.console.routes import is_public_page, register

__all__ = ["is_public_page", "register"]
