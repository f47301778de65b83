"""The built images, run: opt in with AIOPS_IMAGE_TESTS=1 (as root: buildah and runc). The first
run builds every image (about 10 min on 2 cores); later runs take them from the cache."""

from __future__ import annotations

import os
import shutil

import pytest

ENABLED = os.environ.get("AIOPS_IMAGE_TESTS") == "1"


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    reason = ("image builds and runs are opt-in: AIOPS_IMAGE_TESTS=1, as root, with buildah and runc"
              if not ENABLED else "needs root, buildah and runc")
    usable = ENABLED and os.geteuid() == 0 and shutil.which("buildah") and shutil.which("runc")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.images)
            if not usable:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def image():
    """`image(name)`: that image (and its bases), built or from the cache."""
    from aiops.devenv.images import ensure_images

    return lambda name: ensure_images([name])[name]
