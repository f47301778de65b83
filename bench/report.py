"""One line per figure, the same shape for every benchmark: `name  value unit  (note)`."""

from __future__ import annotations


def figure(name: str, value: float, unit: str, note: str = "") -> None:
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    print(f"{name:<48} {text:>10} {unit:<8} {('(' + note + ')') if note else ''}".rstrip(), flush=True)
