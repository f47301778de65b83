"""Kopf handlers, one module per kind; importing this package registers them all."""

import kopf

from aiops.controllers import modeldeployment, monitoring, settings, trainingjob, vectorindex, watches  # noqa: F401

# Registered last, so they run after every controller's startup handler has subscribed its callbacks
# (Kopf runs startup handlers one by one, in the order they were registered).
kopf.on.startup(id="start-watches")(watches.start_watches)
kopf.on.cleanup(id="stop-watches")(watches.stop_watches)
