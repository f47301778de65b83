"""A small, deterministic topic-classification data set for tests, the benchmark and demos: short
sentences about sports, weather or food, built from templates (no download)."""

from __future__ import annotations

import random
from typing import Any

TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "sports": (["the striker scored a late goal", "our team won the match", "the referee showed a red card",
                "she ran the marathon in record time", "the coach picked a new goalkeeper",
                "the tennis final went to five sets", "fans cheered in the stadium"],
               ["yesterday", "in the league", "this season", "at the cup final", "after the break"]),
    "weather": (["heavy rain is expected", "a cold front brings snow", "the forecast says sunny skies",
                 "strong winds hit the coast", "temperatures will drop below freezing",
                 "a thunderstorm is moving east", "fog covers the valley"],
                ["tomorrow morning", "tonight", "over the weekend", "across the region", "later today"]),
    "food": (["this soup needs more salt", "the bakery sells fresh bread", "she cooked pasta with garlic",
              "the restaurant serves spicy curry", "add butter and sugar to the dough",
              "grilled fish with lemon tastes great", "the chef prepared a chocolate cake"],
             ["for dinner", "at lunch", "every sunday", "in the new cafe", "with friends"]),
}
KNOWN = {"the goalkeeper saved a penalty in the match": "sports",
         "snow and ice are forecast for tomorrow": "weather",
         "bake the bread with butter and garlic": "food"}


def topic_rows(n: int, seed: int = 0, labels: tuple[str, ...] = tuple(TOPICS)) -> list[dict[str, Any]]:
    """`n` distinct rows {"text", "label"}, labels in turn."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = labels[len(rows) % len(labels)]
        phrases, tails = TOPICS[label]
        text = f"{rng.choice(phrases)} {rng.choice(tails)}"
        if rng.random() < 0.5:
            text = f"{text} {rng.choice(tails)}"
        key = (text, label)
        if key in seen:
            if len(seen) >= sum(len(p) * len(t) * (len(t) + 1) for p, t in TOPICS.values()):
                raise ValueError(f"cannot make {n} distinct rows")
            continue
        seen.add(key)
        rows.append({"text": text, "label": label})
    return rows
