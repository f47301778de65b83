"""How the operator and its workers log: plain text or one JSON object per line
(AIOPS_LOG_FORMAT=text|json, the Helm value logFormat), with the object a line is about on every
line: `[namespace/name]` in text, an `object` field (apiVersion, kind, namespace, name, uid) in
JSON, as Kopf writes its own per-object lines (`k8s_ref` on the record, python-json-logger for
JSON). The formatters are Kopf's, made here: importing Kopf costs a worker Job almost a second at
start, and the workers have no other use for it.

The object comes from a context variable: a reconcile or a monitoring loop runs `with about(...)`,
so everything logged inside, by our code or a library, names it. A worker Job's process takes it
from its environment (OBJECT_ENV, set by builders/jobs.py), so its lines carry the object too."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from contextvars import ContextVar

from aiops.api.common import GROUP, VERSION

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OBJECT_ENV = ("AIOPS_OBJECT_KIND", "AIOPS_OBJECT_NAMESPACE", "AIOPS_OBJECT_NAME")
_current: ContextVar[dict | None] = ContextVar("aiops_log_object", default=None)


def reference(kind: str, namespace: str, name: str, uid: str | None = None) -> dict:
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "namespace": namespace, "name": name}
    return {**ref, "uid": uid} if uid else ref


@contextlib.contextmanager
def about(kind: str, namespace: str, name: str, uid: str | None = None) -> Iterator[None]:
    """Every line logged inside (in this task) is about this object."""
    token = _current.set(reference(kind, namespace, name, uid))
    try:
        yield
    finally:
        _current.reset(token)


def set_about(kind: str, namespace: str, name: str) -> None:
    """For the rest of this context (a task of its own, a worker process): lines are about this object."""
    _current.set(reference(kind, namespace, name))


class _ObjectReference(logging.Filter):
    """Gives a record the current object, where Kopf's object logger has not already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "k8s_ref") and (ref := _current.get()) is not None:
            record.k8s_ref = ref
        return True


class _PrefixingText(logging.Formatter):
    """Kopf's prefixing text formatter: `[namespace/name] message` for a line about an object."""

    def format(self, record: logging.LogRecord) -> str:
        ref = getattr(record, "k8s_ref", None)
        if ref:
            record = copy.copy(record)
            namespace, name = ref.get("namespace", ""), ref.get("name", "")
            record.msg = f"[{namespace}/{name}] {record.msg}" if namespace else f"[{name}] {record.msg}"
        return super().format(record)


def _json_formatter() -> logging.Formatter:
    """Kopf's JSON formatter: python-json-logger's, with `timestamp`, `severity` and `object`."""
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    class ObjectJson(JsonFormatter):
        def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
            super().add_fields(log_record, record, message_dict)
            if hasattr(record, "k8s_ref"):
                log_record["object"] = record.k8s_ref
            log_record.setdefault("severity", "debug" if record.levelno <= logging.DEBUG else
                                  "info" if record.levelno <= logging.INFO else
                                  "warn" if record.levelno <= logging.WARNING else
                                  "error" if record.levelno <= logging.ERROR else "fatal")

    return ObjectJson(timestamp=True, reserved_attrs={*RESERVED_ATTRS, "k8s_skip", "k8s_ref", "settings"})


def configure(level: str = "INFO", log_format: str = "text") -> None:
    """One handler on the root logger, formatting as `log_format` ("text" or "json")."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(_json_formatter() if log_format == "json" else _PrefixingText(TEXT))
    handler.addFilter(_ObjectReference())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":  # as Kopf does: asyncio's own chatter only when debugging
        logging.getLogger("asyncio").propagate = False
        logging.getLogger("asyncio").handlers[:] = [logging.NullHandler()]


def about_from_environment() -> None:
    """In a worker Job: its lines are about the object its Job is for, when the Job says which."""
    kind, namespace, name = (os.environ.get(v, "") for v in OBJECT_ENV)
    if kind and namespace and name:
        set_about(kind, namespace, name)
