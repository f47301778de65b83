"""A real-text corpus available offline, for the tests and benchmarks: paragraphs of the
docstrings of the Python standard library and the installed packages.

Read with `ast` (nothing is imported: some modules act on import), in sorted file order, so the
same machine gives the same corpus every time. Random vectors say nothing about how an index
behaves on documents; these paragraphs are the kind of text people do index (technical prose).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

MIN_CHARS, MAX_CHARS, MIN_WORDS = 80, 1200, 12
_SPACE = re.compile(r"\s+")


def python_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths["stdlib"]), Path(paths["purelib"])]


def docstrings(source: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of the module, its classes and functions."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield getattr(node, "name", "<module>"), doc


def paragraphs(doc: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", doc):
        text = _SPACE.sub(" ", block).strip()
        if MIN_CHARS <= len(text) <= MAX_CHARS and len(text.split()) >= MIN_WORDS and not text.startswith(">>>"):
            yield text


def iter_passages(roots: list[Path] | None = None) -> Iterator[dict]:
    """{"id", "text", "metadata": {"file", "name"}}; duplicates (copied docstrings) dropped."""
    seen: set[str] = set()
    for root in roots or python_roots():
        for file in sorted(root.rglob("*.py")):
            if "test" in file.parts or "tests" in file.parts:
                continue
            try:
                source = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for name, doc in docstrings(source):
                for text in paragraphs(doc):
                    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
                    if digest in seen:
                        continue
                    seen.add(digest)
                    yield {"id": f"p{digest}", "text": text,
                           "metadata": {"file": str(file.relative_to(root)), "name": name}}


def load_corpus(count: int, cache_dir: Path | None = None) -> list[dict]:
    """The first `count` passages, cached as JSON Lines (building it reads ~10k files)."""
    cache_dir = cache_dir or Path.home() / ".cache" / "aiops"
    cache = cache_dir / f"corpus-{count}.jsonl"
    if cache.exists():
        return [json.loads(line) for line in cache.read_text().splitlines()]
    out = []
    for passage in iter_passages():
        out.append(passage)
        if len(out) >= count:
            break
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(p) + "\n" for p in out))
    tmp.rename(cache)
    return out
