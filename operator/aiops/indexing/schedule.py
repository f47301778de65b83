"""Cron arithmetic for `ingest.schedule` (5 fields or @daily and friends), in UTC like a CronJob
with no time zone set."""

from __future__ import annotations

import datetime as dt

from croniter import croniter


def last_tick(expression: str, now: dt.datetime) -> dt.datetime:
    """The latest scheduled time at or before `now`."""
    return croniter(expression, now + dt.timedelta(seconds=1)).get_prev(dt.datetime)


def seconds_until_next_tick(expression: str, now: dt.datetime) -> float:
    return max((croniter(expression, now).get_next(dt.datetime) - now).total_seconds(), 1.0)
