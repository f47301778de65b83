"""The validation worker's verdict: its shape, its exit codes, the termination message's size limit
and reading it back on the operator's side."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiops.triton.repository import Problem
from aiops.triton.samples import SampleResult
from aiops.worker.validate_model import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_VALID,
    VerdictError,
    build_verdict,
    encode_verdict,
    exit_code,
    parse_verdict,
)

CONFIG = {"name": "m", "backend": "python", "max_batch_size": 8,
          "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}],
          "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}]}


def size(text: str) -> int:
    return len(text.encode())


def test_verdict_shape_with_samples():
    results = [SampleResult("a", True), SampleResult("b", False, "output differs"), SampleResult("c", True)]
    v = build_verdict("valid", "Validated", "ok", model="m", version=3, results=results, config=CONFIG,
                      duration_seconds=4.56789)
    assert v == {"valid": True, "retryable": False, "reason": "Validated", "message": "ok", "model": "m",
                 "version": 3, "problems": [],
                 "samples": {"total": 3, "passed": 2, "accuracy": pytest.approx(2 / 3, abs=1e-6),
                             "failures": [{"sample": "b", "detail": "output differs"}]},
                 "config": CONFIG, "durationSeconds": 4.568}


def test_problems_and_failures_are_capped():
    problems = [Problem("ConfigMismatch", f"problem {i}") for i in range(13)]
    results = [SampleResult(f"s{i}", False, "wrong") for i in range(8)]
    v = build_verdict("invalid", "ConfigMismatch", "bad", problems=problems, results=results)
    assert [p["message"] for p in v["problems"]] == [f"problem {i}" for i in range(10)]
    assert v["moreProblems"] == 3
    assert [f["sample"] for f in v["samples"]["failures"]] == ["s0", "s1", "s2", "s3", "s4"]
    assert v["samples"]["total"] == 8 and v["samples"]["accuracy"] == 0.0


def test_no_samples_means_no_accuracy():
    v = build_verdict("invalid", "VersionNotFound", "gone", problems=[{"reason": "VersionNotFound", "message": "x"}])
    assert v["samples"] == {"total": 0, "passed": 0, "accuracy": None, "failures": []}
    assert v["problems"] == [{"reason": "VersionNotFound", "message": "x"}]
    assert v["config"] is None


@pytest.mark.parametrize("outcome,valid,retryable,code", [
    ("valid", True, False, EXIT_VALID), ("invalid", False, False, EXIT_INVALID), ("error", False, True, EXIT_ERROR)])
def test_outcomes_and_exit_codes(outcome, valid, retryable, code):
    v = build_verdict(outcome, "R", "m")
    assert (v["valid"], v["retryable"], exit_code(v)) == (valid, retryable, code)
    assert (EXIT_VALID, EXIT_ERROR, EXIT_INVALID) == (0, 1, 3)


def test_small_verdict_is_encoded_whole_and_compact():
    v = build_verdict("valid", "Validated", "ok", config=CONFIG)
    text = encode_verdict(v)
    assert json.loads(text) == v
    assert ", " not in text and "configTruncated" not in text


def test_large_config_is_dropped_first():
    config = {**CONFIG, "parameters": {f"key{i}": {"string_value": "x" * 50} for i in range(80)}}
    problems = [Problem("ConfigMismatch", "p" * 100)]
    v = build_verdict("invalid", "ConfigMismatch", "m" * 200, problems=problems, config=config)
    text = encode_verdict(v)
    assert size(text) <= 4000
    out = json.loads(text)
    assert out["config"] is None and out["configTruncated"] is True
    assert "truncated" not in out  # only the config had to go
    assert out["problems"] == [{"reason": "ConfigMismatch", "message": "p" * 100}] and out["message"] == "m" * 200


def test_long_texts_and_lists_are_shortened_after_the_config():
    problems = [Problem("ConfigMismatch", "é" * 900) for _ in range(10)]
    results = [SampleResult(f"s{i}", False, "ü" * 900) for i in range(5)]
    v = build_verdict("invalid", "ConfigMismatch", "ä" * 3000, problems=problems, results=results, config=CONFIG)
    out = json.loads(text := encode_verdict(v))
    assert size(text) <= 4000
    assert out["configTruncated"] is True and out["truncated"] is True
    assert out["reason"] == "ConfigMismatch" and out["valid"] is False
    assert out["message"].startswith("ää") and out["message"].endswith("…")
    assert out["moreProblems"] == 10 - len(out["problems"]) and out["problems"]
    assert out["samples"]["total"] == 5 and out["samples"]["failures"][0]["sample"] == "s0"


def test_the_limit_is_a_parameter():
    v = build_verdict("invalid", "SampleMismatch", "x" * 300, config=CONFIG)
    assert size(encode_verdict(v)) > 600 and "configTruncated" not in encode_verdict(v)
    assert size(encode_verdict(v, limit=600)) <= 600
    assert json.loads(encode_verdict(v, limit=600))["configTruncated"] is True


@settings(max_examples=60, deadline=None)
@given(message=st.text(max_size=6000), details=st.lists(st.text(max_size=2000), max_size=12),
       problems=st.lists(st.text(max_size=2000), max_size=15))
def test_any_verdict_fits_and_reads_back(message, details, problems):
    v = build_verdict("invalid", "SampleMismatch", message, model="m", version=1,
                      problems=[Problem("ConfigMismatch", p) for p in problems],
                      results=[SampleResult(f"s{i}", False, d) for i, d in enumerate(details)], config=CONFIG)
    text = encode_verdict(v)
    assert size(text) <= 4000
    back = parse_verdict(text)
    assert (back["valid"], back["retryable"], back["reason"], back["version"]) == (False, False, "SampleMismatch", 1)
    assert back["samples"]["total"] == len(details)
    assert message.startswith(back["message"].removesuffix("…"))


def test_parse_round_trip_and_defaults():
    v = build_verdict("error", "TritonStartFailed", "no server", model="m", version=2)
    assert parse_verdict(encode_verdict(v)) == {**v, "configTruncated": False, "truncated": False}
    assert parse_verdict(encode_verdict(v).encode())["reason"] == "TritonStartFailed"
    minimal = parse_verdict('{"valid": true, "reason": "Validated"}')
    assert minimal["problems"] == [] and minimal["config"] is None and minimal["retryable"] is False
    assert minimal["samples"] == {"total": 0, "passed": 0, "accuracy": None, "failures": []}


@pytest.mark.parametrize("text,match", [
    ("", "no verdict"), ("   \n", "no verdict"), (None, "no verdict"), ("Error: boom", "not JSON"),
    ("[1, 2]", "not a verdict"), ('{"valid": "yes", "reason": "X"}', "not a verdict"),
    ('{"valid": true}', "not a verdict")])
def test_parse_rejects_what_is_not_a_verdict(text, match):
    with pytest.raises(VerdictError, match=match):
        parse_verdict(text)
