"""Kopf handlers, one module per kind; importing this package registers them all."""

from aiops.controllers import modeldeployment, monitoring, settings, trainingjob, vectorindex  # noqa: F401
