"""The operator's Kopf wiring: it relies on having only event handlers."""

import kopf

import aiops.controllers  # noqa: F401 - registers the handlers
from aiops.controllers.settings import NoDiffBase


def test_no_create_update_delete_handlers_so_no_diff_base_is_needed():
    # NoDiffBase skips Kopf's per-event "last handled" copy; a changing handler would need it.
    assert kopf.get_default_registry()._changing.get_all_handlers() == []
    storage = NoDiffBase()
    assert storage.build(body={"spec": {"a": 1}}) == {} and storage.fetch(body={}) is None

