"""Kopf handlers, one module per kind; importing this package registers them all."""

from aiops.controllers import settings  # noqa: F401
