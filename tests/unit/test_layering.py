"""The product apart from the development tools, and one way to the API server: checked on the
source, so a new import that breaks either rule fails here rather than in an image."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "aiops"


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def product_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "devenv" not in p.relative_to(PACKAGE).parts]


def test_nothing_outside_devenv_imports_devenv():
    offenders = {str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n.startswith("aiops.devenv"))
                 for p in product_modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_kube_layer_uses_the_kubernetes_clients():
    """The controllers reach the API server through aiops.kube (one session); the kubernetes
    package's typed clients and configuration appear only in kube/ (the Lease, the configuration)
    and in the workers, which run in their own pods."""
    allowed = {"kube", "worker"}
    offenders = {}
    for p in product_modules():
        top = p.relative_to(PACKAGE).parts[0]
        used = sorted(n for n in imports(p) if n in ("kubernetes.client", "kubernetes.config")
                      and top not in allowed)
        if used:
            offenders[str(p.relative_to(PACKAGE))] = used
    assert offenders == {}


def test_every_import_of_the_package_resolves():
    """Also the imports inside functions (a floor operator of the benchmarks, lazy CLI imports),
    which no test run reaches before a module moves."""
    import importlib

    root = PACKAGE.parents[1]
    missing = []
    for path in [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py"), *(root / "bench").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aiops":
                try:
                    module = importlib.import_module(node.module)
                except ImportError as e:
                    missing.append(f"{path.relative_to(root)}: {node.module} ({e})")
                    continue
                missing += [f"{path.relative_to(root)}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert missing == []
