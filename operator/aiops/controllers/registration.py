"""One function wires a kind to the operator: Kopf's watch of the kind feeds its reconcile loop,
the loop starts with the operator (its children's watches subscribed by the kind's own `build`),
its cache is checked against a LIST now and then, and everything stops with the operator.

Why two watch mechanisms: Kopf watches the custom kinds (its handlers, settings, peering and
liveness are what operators built on it expect); the child kinds (pods, Jobs, Deployments,
StatefulSets, ConfigMaps, nodes) come from the project's shared informers, one LIST and watch per
kind for all three controllers, which Kopf has no equivalent for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from aiops.api.common import GROUP, VERSION
from aiops.api.registry import KindInfo
from aiops.controllers.loop import Key, ReconcileLoop
from aiops.kube.objects import json_copy


def register_kind(kind: KindInfo, attr: str, build: Callable[[kopf.Memo], ReconcileLoop],
                  on_gone: Callable[[kopf.Memo, Key], None] | None = None) -> None:
    """`build(memo)` makes the kind's loop and subscribes its callbacks to the shared watches; the
    loop is kept as `memo.<attr>`. `on_gone(memo, key)`: an object the LIST check found deleted
    without the watch saying so (for what else follows the object, such as monitoring)."""

    async def start(memo: kopf.Memo, **_: Any) -> None:
        loop = build(memo)
        setattr(memo, attr, loop)
        loop.start()
        loop.start_checks(kind.plural, (lambda key: on_gone(memo, key)) if on_gone else None)

    async def stop(memo: kopf.Memo, **_: Any) -> None:
        await getattr(memo, attr).stop()

    async def changed(event: dict, memo: kopf.Memo, **_: Any) -> None:
        getattr(memo, attr).observe(json_copy(event["object"]), event.get("type") == "DELETED")

    kopf.on.startup(id=f"start-{kind.plural}")(start)
    kopf.on.cleanup(id=f"stop-{kind.plural}")(stop)
    kopf.on.event(GROUP, VERSION, kind.plural, id=f"{kind.plural}-changed")(changed)
