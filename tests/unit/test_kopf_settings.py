"""The operator's Kopf wiring: it relies on having only event handlers."""

import kopf

import aiops.controllers  # noqa: F401 - registers the handlers
from aiops.controllers.settings import NoDiffBase


def test_no_create_update_delete_handlers_so_no_diff_base_is_needed():
    # NoDiffBase skips Kopf's per-event "last handled" copy; a changing handler would need it.
    assert kopf.get_default_registry()._changing.get_all_handlers() == []
    storage = NoDiffBase()
    assert storage.build(body={"spec": {"a": 1}}) == {} and storage.fetch(body={}) is None



def test_kopf_watches_only_our_kinds_and_the_informers_start_last():
    """Child kinds come from the shared informers (aiops.controllers.watches), whose first lists
    are in before Kopf starts its watches: the informers' startup handler is the last one."""
    registry = kopf.get_default_registry()
    assert {h.selector.group for h in registry._watching.get_all_handlers()} == {"aiops.dev"}
    assert registry._indexing.get_all_handlers() == []
    startup = [h.id for h in registry._activities.get_all_handlers() if h.activity.value == "startup"]
    assert startup[-1] == "start-watches"
