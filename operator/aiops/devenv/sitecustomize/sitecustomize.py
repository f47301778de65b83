"""Loaded by Python at start-up in every process the simulated node launches (this directory is
first on their PYTHONPATH): installs the cluster DNS emulation of `aiops.devenv.servicedns`, so
`<svc>.<ns>.svc:<port>` reaches a ready pod. It loads that module from its file rather than
importing the `aiops` package, and never fails the process: without it, names resolve as usual."""

try:
    import importlib.util as _util
    import os as _os

    _path = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "servicedns.py")
    if _os.environ.get("AIOPS_SERVICE_DNS_FILE") and _os.path.exists(_path):
        _spec = _util.spec_from_file_location("_aiops_servicedns", _path)
        _module = _util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
        _module.install_from_env()
except Exception as _e:  # noqa: BLE001 - a broken resolver must not break the program
    import sys as _sys

    print(f"aiops sitecustomize: cluster DNS emulation not installed: {_e}", file=_sys.stderr)
