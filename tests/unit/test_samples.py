"""Samples to tensors, and judging a model's answers against them."""

import numpy as np
import pytest

from aiops.api.modeldeployment import ExpectedOutput, SampleTensor, ValidationSample
from aiops.triton.samples import (
    SampleResult,
    accuracy,
    judge,
    judge_text,
    meets_accuracy,
    output_mismatch,
    text_answer,
    to_numpy,
)


def tensor(cls=SampleTensor, **kw):
    return cls.model_validate({"name": "x", "dataType": "FP32", "shape": [1, 2], "data": [1.0, 2.0], **kw})


def test_numeric_and_bytes_tensors():
    a = to_numpy(tensor())
    assert a.dtype == np.float32 and a.shape == (1, 2)
    b = to_numpy(tensor(dataType="BYTES", shape=[2], data=["héllo", "b"]))
    assert b.dtype == object and list(b) == ["héllo".encode(), b"b"]
    assert to_numpy(tensor(dataType="INT64", data=[1, 2])).dtype == np.int64


def test_data_must_fill_the_shape():
    with pytest.raises(ValueError, match="3 values do not fill shape \\[1, 2\\]"):
        to_numpy(tensor(data=[1.0, 2.0, 3.0]))


def test_numeric_output_within_tolerance():
    exp = tensor(ExpectedOutput, tolerance=0.01)
    assert output_mismatch(exp, np.array([[1.005, 2.0]], dtype=np.float32)) is None
    msg = output_mismatch(exp, np.array([[1.5, 2.0]], dtype=np.float32))
    assert "differs by up to 0.5" in msg
    assert "shape [2]" in output_mismatch(exp, np.array([1.0, 2.0]))
    assert "missing" in output_mismatch(exp, None)
    assert output_mismatch(exp, np.array([[np.nan, 2.0]])) is not None


def test_bytes_output_compared_as_text():
    exp = tensor(ExpectedOutput, dataType="BYTES", shape=[1], data=["billing"])
    assert output_mismatch(exp, np.array([b"billing"], dtype=object)) is None
    assert "expected ['billing']" in output_mismatch(exp, np.array([b"account"], dtype=object))


def test_judge_and_accuracy():
    sample = ValidationSample.model_validate({
        "name": "s1", "inputs": [{"name": "IN", "dataType": "FP32", "shape": [1], "data": [1.0]}],
        "expectedOutputs": [{"name": "OUT", "dataType": "FP32", "shape": [1], "data": [2.0]}]})
    assert judge(sample, {"OUT": np.array([2.0])}).passed
    bad = judge(sample, {"OUT": np.array([3.0])})
    assert not bad.passed and "OUT" in bad.detail
    results = [SampleResult("a", True), SampleResult("b", False), SampleResult("c", True), SampleResult("d", True)]
    assert accuracy(results) == 0.75
    assert meets_accuracy(results, 0.75) and not meets_accuracy(results, 0.8)
    assert not meets_accuracy(results, None)  # unset minimum: all must pass
    assert meets_accuracy([], 0.9) and accuracy([]) is None


# ---- generation samples ------------------------------------------------------------------------------

def generation(expect: dict | None = None, stream: bool = False) -> ValidationSample:
    return ValidationSample.from_wire({"name": "g", "generate": {"prompt": "The capital of France is",
                                                                 "stream": stream},
                                       **({"expectedText": expect} if expect is not None else {})})


@pytest.mark.parametrize("expect, text, problem", [
    ({"exact": "Paris."}, " Paris.\n", None),
    ({"exact": "Paris."}, " Paris, France.", "expected exactly 'Paris.'"),
    ({"contains": ["Paris", "."]}, " Paris.", None),
    ({"contains": ["Paris", "France"]}, " Paris.", "lacks 'France'"),
    ({"regex": r"\bParis\b"}, " Paris.", None),
    ({"regex": r"^\d+$"}, " Paris.", "does not match"),
    ({"contains": ["Paris"], "regex": "Lyon"}, " Paris.", "does not match 'Lyon'"),
    ({}, "", None),
])
def test_text_checks_each_must_hold_and_the_first_failure_shows_the_text(expect, text, problem):
    result = judge_text(generation(expect), text)
    assert result.passed is (problem is None)
    if problem:
        assert problem in result.detail and repr(text if len(text) <= 200 else text[:200] + "...") in result.detail


def test_a_long_generated_text_is_shown_cut_short():
    result = judge_text(generation({"contains": ["never"]}), "x" * 5000)
    assert not result.passed and len(result.detail) < 400


def test_the_prompt_a_backend_repeats_is_taken_off_a_whole_answer_not_a_stream():
    whole, stream = generation().generate, generation(stream=True).generate
    assert text_answer(whole, "The capital of France is Paris.") == " Paris."
    assert text_answer(whole, " Paris.") == " Paris."
    assert text_answer(stream, "The capital of France is Paris.") == "The capital of France is Paris."


def test_a_sample_is_either_tensors_or_a_prompt():
    with pytest.raises(ValueError, match="exactly one of inputs, generate"):
        ValidationSample.from_wire({"name": "both", "generate": {"prompt": "hi"},
                                    "inputs": [{"name": "x", "dataType": "FP32", "shape": [1], "data": [1]}]})
    with pytest.raises(ValueError, match="exactly one of inputs, generate"):
        ValidationSample.from_wire({"name": "neither"})
    request = generation().generate
    assert (request.max_tokens, request.parameters, request.stream) == (64, {"temperature": 0}, False)
