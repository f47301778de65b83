"""The validation worker's verdict: one JSON object, written as the Job container's termination
message, which is how it reaches the operator (through the pod's status, never shared disk).

Schema (keys in this order; every key is always present unless marked "only when"):

    valid            bool   the version may serve
    retryable        bool   the worker could not judge the model (exit 1): retry later, do not
                            reject the version
    reason           str    CamelCase, for the Valid condition: Validated, InferenceSkipped, a
                            static check's reason (ModelNotFound, ConfigMissing, ConfigInvalid,
                            ConfigMismatch, BatchingUnsupported, VersionNotFound,
                            ModelFileMissing), ModelLoadFailed, SampleMismatch,
                            AccuracyBelowMinimum, ValidationSetInvalid, or a worker error
                            (SpecUnreadable, ValidationSetUnreadable, TritonUnreachable,
                            TritonStartFailed, ValidationTimeout, ValidationInterrupted,
                            WorkerError)
    message          str    one sentence for `kubectl describe`: what happened, what to do
    model, version   str, int | null   what was validated (null when the spec was unreadable)
    problems         [{"reason", "message"}]  the first 10 static problems
    moreProblems     int    only when problems were cut: how many were left out
    samples          {"total", "passed", "accuracy" (null when none ran),
                      "failures": [{"sample", "detail"}] (the first 5)}
    config           object | null  the model's config.pbtxt as JSON (null when it did not parse)
    configTruncated  true   only when `config` was dropped to fit: read config.pbtxt another way
    truncated        true   only when lists or texts were shortened beyond the caps above
    durationSeconds  float  wall time of the whole validation

The kubelet keeps at most 4096 bytes of a termination message, so `encode_verdict` keeps the JSON
under 4000 (UTF-8) bytes: it drops `config` first, then shortens lists and texts, and as a last
resort keeps only the judgement itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from aiops.triton.repository import Problem
from aiops.triton.samples import SampleResult, accuracy

Outcome = Literal["valid", "invalid", "error"]

# Exit codes of `aiops worker validate-model`. 2 is argparse's usage error, hence 3 for "invalid".
EXIT_VALID, EXIT_ERROR, EXIT_INVALID = 0, 1, 3

MESSAGE_LIMIT = 4000  # bytes; the kubelet's limit is 4096, the rest is slack
MAX_PROBLEMS, MAX_FAILURES = 10, 5


class VerdictError(ValueError):
    """The text is not a verdict (empty, not JSON, or missing `valid`/`reason`)."""


def _problem(p: Problem | dict) -> dict[str, str]:
    if isinstance(p, Problem):
        return {"reason": p.reason, "message": p.message}
    return {"reason": str(p.get("reason", "")), "message": str(p.get("message", ""))}


def samples_summary(results: Sequence[SampleResult] | None) -> dict[str, Any]:
    results = list(results or [])
    score = accuracy(results)
    return {"total": len(results), "passed": sum(r.passed for r in results),
            "accuracy": None if score is None else round(score, 6),
            "failures": [{"sample": r.sample, "detail": r.detail} for r in results if not r.passed][:MAX_FAILURES]}


def build_verdict(outcome: Outcome, reason: str, message: str, *, model: str | None = None,
                  version: int | None = None, problems: Iterable[Problem | dict] = (),
                  results: Sequence[SampleResult] | None = None, config: dict | None = None,
                  duration_seconds: float = 0.0) -> dict[str, Any]:
    """The verdict as a dict (see the module docstring); pure, so tests and the operator's own
    fakes build the same shape the worker writes."""
    listed = [_problem(p) for p in problems]
    verdict: dict[str, Any] = {
        "valid": outcome == "valid", "retryable": outcome == "error", "reason": reason,
        "message": message, "model": model, "version": version, "problems": listed[:MAX_PROBLEMS]}
    if len(listed) > MAX_PROBLEMS:
        verdict["moreProblems"] = len(listed) - MAX_PROBLEMS
    verdict["samples"] = samples_summary(results)
    verdict["config"] = config
    verdict["durationSeconds"] = round(duration_seconds, 3)
    return verdict


def exit_code(verdict: dict[str, Any]) -> int:
    if verdict.get("valid"):
        return EXIT_VALID
    return EXIT_ERROR if verdict.get("retryable") else EXIT_INVALID


# ---- encoding within the termination message's limit ---------------------------------------------

def _dumps(verdict: dict[str, Any]) -> str:
    return json.dumps(verdict, ensure_ascii=False, separators=(",", ":"))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _shortened(verdict: dict[str, Any], text_limit: int, list_limit: int) -> dict[str, Any]:
    out = dict(verdict)
    out["message"] = _cut(str(verdict.get("message", "")), text_limit)
    problems = verdict.get("problems") or []
    out["problems"] = [{"reason": p["reason"], "message": _cut(p["message"], text_limit)}
                       for p in problems[:list_limit]]
    if len(problems) > list_limit:
        out["moreProblems"] = verdict.get("moreProblems", 0) + len(problems) - list_limit
    samples = dict(verdict.get("samples") or samples_summary(None))
    samples["failures"] = [{"sample": _cut(f["sample"], 64), "detail": _cut(f["detail"], text_limit)}
                           for f in samples.get("failures", [])[:list_limit]]
    out["samples"] = samples
    out["truncated"] = True
    return out


def _candidates(verdict: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Ever smaller forms of the verdict, the most complete first."""
    yield verdict
    if verdict.get("config") is not None:
        verdict = {**verdict, "config": None, "configTruncated": True}
        yield verdict
    for text_limit, list_limit in ((1000, MAX_FAILURES), (400, 3), (160, 1)):
        yield _shortened(verdict, text_limit, list_limit)
    # Last resort: the judgement alone. Fits any limit the kubelet has: 500 characters of message
    # are at most 2000 bytes.
    keep = ("valid", "retryable", "reason", "model", "version", "configTruncated", "durationSeconds")
    minimal = {k: verdict[k] for k in keep if k in verdict}
    minimal["message"] = _cut(str(verdict.get("message", "")), 500)
    minimal["truncated"] = True
    yield minimal


def encode_verdict(verdict: dict[str, Any], limit: int = MESSAGE_LIMIT) -> str:
    """Compact JSON of the most complete form of `verdict` that fits in `limit` UTF-8 bytes."""
    text = ""
    for candidate in _candidates(verdict):
        text = _dumps(candidate)
        if len(text.encode()) <= limit:
            return text
    return text  # only when `limit` is absurdly small; the minimal form is still the best there is


# ---- reading it back (the operator's side) ----------------------------------------------------------

def parse_verdict(text: str | bytes | None) -> dict[str, Any]:
    """A termination message back into a verdict with every key present (defaults filled in);
    raises VerdictError when it is not one (e.g. the worker was killed before writing it)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if not text or not text.strip():
        raise VerdictError("the validation worker left no verdict (killed, or never started)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VerdictError(f"the validation worker's message is not JSON ({e}): {text[:200]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("valid"), bool) \
            or not isinstance(data.get("reason"), str):
        raise VerdictError(f"the validation worker's message is not a verdict: {text[:200]!r}")
    samples = {**samples_summary(None), **(data.get("samples") or {})}
    return {"retryable": False, "message": "", "model": None, "version": None, "problems": [],
            "config": None, "configTruncated": False, "truncated": False, "durationSeconds": None,
            **data, "samples": samples}
