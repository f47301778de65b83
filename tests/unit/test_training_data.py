"""The `data` step of `aiops worker train`: collection, preprocessing, every validation rule, and
content-addressed dataset versions. Pure Python, no torch."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from aiops.api.trainingjob import TrainingJobSpec
from aiops.training.dataset import prepare_dataset
from aiops.training.datastore import load_split
from aiops.training.synthetic import topic_rows
from aiops.worker.train import fit
from aiops.worker.train import main as worker_main

FIELDS = [{"name": "text", "type": "string"}, {"name": "label", "type": "string"}]


def make_spec(**overrides) -> TrainingJobSpec:
    wire = {"dataset": {"source": {"configMap": {"name": "rows"}}, "schema": {"fields": FIELDS}},
            "training": {"task": "text-classification"},
            "output": {"modelName": "topics", "repository": {"hostPath": {"path": "/models"}}}}
    for key, value in overrides.items():
        wire[key] = {**wire.get(key, {}), **value}
    return TrainingJobSpec.from_wire(wire)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def versions(workspace: Path) -> list[str]:
    root = workspace / "datasets"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_valid_data_is_stored_with_manifest(tmp_path):
    source = write_jsonl(tmp_path / "rows.jsonl", topic_rows(30))
    result = prepare_dataset(make_spec(), str(source), tmp_path / "w")
    assert result["ok"], result
    version = result["datasetVersion"]
    assert versions(tmp_path / "w") == [version]
    stats = result["stats"]
    assert (stats["rows"], stats["trainRows"], stats["validationRows"], stats["testRows"]) == (30, 24, 6, 0)
    manifest = json.loads((tmp_path / "w" / "datasets" / version / "manifest.json").read_text())
    assert manifest["checksum"].startswith(version) and manifest["createdAt"] == stats["createdAt"]
    assert manifest["files"]["train.jsonl"]["rows"] == 24 and len(manifest["files"]["train.jsonl"]["sha256"]) == 64
    assert manifest["preprocessing"] == ["normalizeWhitespace", "dropEmpty", "dropInvalid", "deduplicate"]
    assert manifest["validation"]["minRows"] == 10 and manifest["labels"] == ["food", "sports", "weather"]
    # Stratified: each label is in the validation split.
    assert {r["label"] for r in load_split(tmp_path / "w" / "datasets", version, "validation")} == \
        {"food", "sports", "weather"}


def test_same_data_same_version_and_one_changed_row_a_new_one(tmp_path):
    rows = topic_rows(30)
    a = write_jsonl(tmp_path / "a.jsonl", rows)
    b = write_jsonl(tmp_path / "b.jsonl", [{**r, "text": "  " + r["text"] + "  "} for r in rows])  # same after trim
    first = prepare_dataset(make_spec(), str(a), tmp_path / "w")
    manifest = tmp_path / "w" / "datasets" / first["datasetVersion"] / "manifest.json"
    mtime = manifest.stat().st_mtime_ns
    again = prepare_dataset(make_spec(), str(b), tmp_path / "w")
    assert again["datasetVersion"] == first["datasetVersion"] and again["reused"]
    assert again["stats"]["createdAt"] == first["stats"]["createdAt"] and manifest.stat().st_mtime_ns == mtime
    assert versions(tmp_path / "w") == [first["datasetVersion"]]  # no duplicate directory, no temp left
    changed = write_jsonl(tmp_path / "c.jsonl", [*rows[:-1], {**rows[-1], "text": rows[-1]["text"] + " today"}])
    third = prepare_dataset(make_spec(), str(changed), tmp_path / "w")
    assert third["ok"] and third["datasetVersion"] != first["datasetVersion"]
    assert len(versions(tmp_path / "w")) == 2
    other_seed = prepare_dataset(make_spec(preprocessing={"split": {"seed": 7}}), str(a), tmp_path / "w")
    assert other_seed["datasetVersion"] not in (first["datasetVersion"], third["datasetVersion"])


def test_invalid_rows_are_rejected_with_line_numbers_and_nothing_stored(tmp_path):
    rows = [json.dumps(r) for r in topic_rows(20)]
    rows[2] = '{"text": "broken json"'
    rows[5] = json.dumps({"text": 42, "label": "food"})
    rows[9] = json.dumps({"text": "ok", "label": "music"})
    source = write_jsonl(tmp_path / "rows.jsonl", rows[:7] + [""] + rows[7:])  # a blank line shifts the rest
    spec = make_spec(preprocessing={"steps": ["normalizeWhitespace"]},
                     validation={"allowedLabels": ["food", "sports", "weather"]})
    result = prepare_dataset(spec, str(source), tmp_path / "w")
    assert not result["ok"] and result["reason"] == "DataValidationFailed"
    by_row = {(e["row"], e["field"]): e["message"] for e in result["errors"]}
    assert "not JSON" in by_row[(3, None)]
    assert "expected string" in by_row[(6, "text")]
    assert "music" in by_row[(11, "label")] and "allowedLabels" in by_row[(11, "label")]
    assert result["errorCount"] == len(result["errors"]) == 3
    assert versions(tmp_path / "w") == []


def test_drop_invalid_and_drop_empty_remove_rows_instead(tmp_path):
    rows = topic_rows(20) + [{"text": "   ", "label": "food"}, {"text": 42, "label": "food"}, "not json"]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = prepare_dataset(make_spec(), str(source), tmp_path / "w")
    assert result["ok"], result
    assert result["dropped"] == {"empty": 1, "invalid": 2, "duplicates": 0, "nullRows": 0}
    assert result["stats"]["rows"] == 20


@pytest.mark.parametrize("rule, rows, expected", [
    ({"minRows": 50}, topic_rows(30), "minRows is 50"),
    ({"maxNullFraction": 0.05}, topic_rows(27) + [{"text": "x"}] * 3, "miss a required field"),
    ({"maxDuplicateFraction": 0.1}, topic_rows(24) + topic_rows(6), "are duplicates"),
    ({"minClassFraction": 0.2}, topic_rows(27, labels=("food", "sports")) + topic_rows(3, labels=("weather",)),
     "minClassFraction"),
    ({"allowedLabels": ["food", "sports"]}, topic_rows(30), "allowedLabels"),
])
def test_every_rule(tmp_path, rule, rows, expected):
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    # Without dropInvalid: a disallowed label is a violation, not a dropped row.
    spec = make_spec(validation=rule, preprocessing={"steps": ["normalizeWhitespace", "dropEmpty", "deduplicate"]})
    result = prepare_dataset(spec, str(source), tmp_path / "w")
    assert not result["ok"], result
    assert any(expected in e["message"] for e in result["errors"]), result["errors"]
    assert versions(tmp_path / "w") == []


def test_tolerated_nulls_are_dropped_and_duplicates_measured_before_dedup(tmp_path):
    rows = topic_rows(27) + [{"label": "food"}] + topic_rows(2)  # one null row (3.3%), two duplicates
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = prepare_dataset(make_spec(validation={"maxNullFraction": 0.05, "maxDuplicateFraction": 0.1}),
                             str(source), tmp_path / "w")
    assert result["ok"], result
    assert result["dropped"]["nullRows"] == 1 and result["dropped"]["duplicates"] == 2
    strict = prepare_dataset(make_spec(validation={"maxNullFraction": 0.05, "maxDuplicateFraction": 0.05}),
                             str(source), tmp_path / "w2")
    assert any(e["row"] == 29 and "duplicate of row 1" in e["message"] for e in strict["errors"])


def test_schema_types_and_allowed_values(tmp_path):
    fields = [*FIELDS, {"name": "score", "type": "number", "required": False},
              {"name": "lang", "type": "string", "allowedValues": ["en", "de"], "required": False}]
    rows = [{**r, "score": 0.5, "lang": "en"} for r in topic_rows(20)]
    rows[3]["score"], rows[4]["lang"] = "high", "fr"
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    spec = make_spec(dataset={"schema": {"fields": fields}}, preprocessing={"steps": []})
    result = prepare_dataset(spec, str(source), tmp_path / "w")
    assert {(e["row"], e["field"]) for e in result["errors"]} == {(4, "score"), (5, "lang")}


def test_csv_directory_source_and_lowercase(tmp_path):
    mount = tmp_path / "cm"
    mount.mkdir()
    (mount / "..data").mkdir()  # what a ConfigMap mount also holds: skipped
    rows = topic_rows(24)
    (mount / "a.csv").write_text("text,label\n" + "".join(f'"{r["text"].upper()}",{r["label"]}\n' for r in rows[:12]))
    (mount / "b.csv").write_text("text,label\n" + "".join(f'{r["text"]},{r["label"]}\n' for r in rows[12:])
                                 + "only one cell\n")
    spec = make_spec(dataset={"format": "csv"},
                     preprocessing={"steps": ["normalizeWhitespace", "lowercase", "deduplicate"]})
    result = prepare_dataset(spec, str(mount), tmp_path / "w")
    assert not result["ok"]
    assert result["errors"] == [{"row": 14, "field": None, "message": "b.csv: 1 cells, the header has 2"}]
    spec = make_spec(dataset={"format": "csv"},
                     preprocessing={"steps": ["normalizeWhitespace", "lowercase", "dropInvalid", "deduplicate"]})
    result = prepare_dataset(spec, str(mount), tmp_path / "w")
    assert result["ok"] and result["stats"]["rows"] == 24
    stored = load_split(tmp_path / "w" / "datasets", result["datasetVersion"], "train")
    assert all(r["text"] == r["text"].lower() for r in stored)


def test_http_source_and_unsupported_object_store(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", topic_rows(20))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/rows.jsonl"
        assert prepare_dataset(make_spec(), url, tmp_path / "w")["ok"]
        missing = prepare_dataset(make_spec(), url + ".gone", tmp_path / "w")
        assert missing["reason"] == "SourceUnavailable"
    finally:
        server.shutdown()
    s3 = prepare_dataset(make_spec(), "s3://bucket/rows.jsonl", tmp_path / "w")
    assert s3["ok"] is False and s3["reason"] == "UnsupportedSource"


def test_worker_cli_writes_a_small_result_and_exit_codes(tmp_path, capsys):
    rows = [json.dumps(r) for r in topic_rows(40)] + ['{"text": ' + '"x' * 200 + "}"] * 30
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"spec": make_spec(preprocessing={"steps": []}).to_wire()}))
    result_file = tmp_path / "result.json"
    code = worker_main(["data", "--spec", str(spec_file), "--source", str(source), "--workspace",
                        str(tmp_path / "w"), "--result", str(result_file)])
    result = json.loads(result_file.read_text())
    assert code == 1 and result["reason"] == "DataValidationFailed" and result["errorCount"] == 30
    assert len(result_file.read_bytes()) < 3000 and 0 < len(result["errors"]) <= 20
    assert result["errors"][0]["row"] == 41
    spec_file.write_text("{}")
    assert worker_main(["data", "--spec", str(spec_file), "--source", str(source), "--workspace",
                        str(tmp_path / "w"), "--result", str(result_file)]) == 1
    assert json.loads(result_file.read_text())["reason"] == "SpecInvalid"


def test_fit_keeps_results_under_the_termination_message_limit():
    big = {"ok": False, "reason": "DataValidationFailed", "message": "m" * 5000, "errorCount": 500,
           "errors": [{"row": i, "field": "text", "message": "x" * 160} for i in range(20)]}
    text = fit(big)
    assert len(text.encode()) <= 3000
    assert json.loads(text)["errorCount"] == 500


def test_an_unexpected_error_exits_2_naming_the_exception(tmp_path, monkeypatch):
    import aiops.training.dataset

    def broken(*args):
        raise KeyError("surprise")

    monkeypatch.setattr(aiops.training.dataset, "prepare_dataset", broken)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(make_spec().to_wire()))
    code = worker_main(["data", "--spec", str(spec_file), "--source", str(tmp_path), "--workspace", str(tmp_path),
                        "--result", str(tmp_path / "result.json")])
    result = json.loads((tmp_path / "result.json").read_text())
    assert code == 2 and result == {"ok": False, "reason": "WorkerError", "message": "KeyError: 'surprise'"}
