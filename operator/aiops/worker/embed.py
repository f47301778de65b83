"""`aiops worker embed`: one ingest run of a VectorIndex, in a Job pod on the shared GPU.

    aiops worker embed --spec SPEC.json --source PATH --milvus-uri URI [--credentials-dir DIR]
                       [--owner NAMESPACE/NAME] [--checksum-only] [--result FILE]

SPEC.json: the VectorIndex spec in wire (camelCase) form, or the whole object. PATH: the mounted
source (ConfigMap dir or PVC file/dir). DIR: the mounted credentials Secret (its keys per
spec.milvus.external.credentials; never in the spec). NAMESPACE/NAME: the VectorIndex the
collection belongs to (recorded on the collection; one owned by another is refused). The result
is one JSON object written to FILE (default $AIOPS_RESULT_FILE or /dev/termination-log, which
Kubernetes caps at 4096 bytes: results stay under 3 KB) and printed as the last line of stdout:

    ok: {"ok": true, "total", "embedded", "skipped", "deleted", "failed", "durationSeconds",
         "documentsPerSecond", "sourceChecksum", "collection", "rows", ["failures"], ["index"]}
    --checksum-only: {"ok": true, "sourceChecksum", "files"} (Milvus is not contacted)
    handled failure: {"ok": false, "reason": "CamelCase", "message": "..."}, exit 1

Exit codes: 0 done (bad documents are counted in `failed`, with the first few in `failures`);
1 the run failed (retry is safe: the run is idempotent); 2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aiops.api.vectorindex import VectorIndexSpec
from aiops.progress import Reporter

log = logging.getLogger(__name__)

RESULT_LIMIT = 3072


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aiops worker embed", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="VectorIndex spec (wire JSON)")
    parser.add_argument("--source", required=True, help="the mounted document source")
    parser.add_argument("--milvus-uri", help="Milvus endpoint, e.g. http://milvus:19530")
    parser.add_argument("--credentials-dir", help="the mounted credentials Secret")
    parser.add_argument("--owner", help="the VectorIndex (namespace/name) the collection belongs to")
    parser.add_argument("--checksum-only", action="store_true", help="only the source checksum; no Milvus")
    parser.add_argument("--result", default=os.environ.get("AIOPS_RESULT_FILE", "/dev/termination-log"))
    args = parser.parse_args(argv)
    if not args.checksum_only and not args.milvus_uri:
        parser.error("--milvus-uri is required unless --checksum-only")
    return args


def load_spec(path: Path) -> VectorIndexSpec:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "spec" in data and "collection" not in data:
        data = data["spec"]
    return VectorIndexSpec.from_wire(data)


def read_credentials(spec: VectorIndexSpec, directory: Path | None) -> dict[str, str]:
    """MilvusClient keyword arguments from the mounted Secret: token when the spec names a token
    key, else user/password (keys from the spec, default username/password)."""
    if directory is None:
        return {}
    external = spec.milvus.external
    creds = external.credentials if external else None
    token_key = creds.token_key if creds else None
    if token_key:
        return {"token": (directory / token_key).read_text().strip()}
    user_key = creds.username_key if creds else "username"
    password_key = creds.password_key if creds else "password"
    return {"user": (directory / user_key).read_text().strip(),
            "password": (directory / password_key).read_text().strip()}


def connect(spec: VectorIndexSpec, uri: str, credentials: dict[str, str]):
    from pymilvus import MilvusClient

    database = spec.milvus.external.database if spec.milvus.external else "default"
    kwargs: dict[str, Any] = {"uri": uri, **credentials}
    if database != "default":
        kwargs["db_name"] = database
    return MilvusClient(**kwargs)


def failure(reason: str, message: str) -> dict:
    return {"ok": False, "reason": reason, "message": message[:1500]}


def write_result(result: dict, path: str) -> None:
    text = json.dumps(result, separators=(",", ":"))
    if len(text) > RESULT_LIMIT:  # never let Kubernetes truncate the JSON into something unparsable
        result = {k: v for k, v in result.items() if k not in ("failures", "index")}
        text = json.dumps(result, separators=(",", ":"))[:RESULT_LIMIT]
    try:
        with open(path, "w") as out:
            out.write(text)
    except OSError as exc:
        log.warning("cannot write the result to %s: %s", path, exc)
    print(text, flush=True)


def run(args: argparse.Namespace) -> dict:
    from aiops.vectors.documents import SourceError, source_checksum, source_files

    try:
        spec = load_spec(Path(args.spec))
    except (OSError, ValueError, ValidationError) as exc:
        return failure("InvalidSpec", f"{args.spec}: {exc}")
    source = Path(args.source)
    key = spec.source.config_map.key if spec.source.config_map else None
    if args.checksum_only:
        try:
            files = source_files(source, key)
            return {"ok": True, "sourceChecksum": source_checksum(files, source if source.is_dir() else None),
                    "files": len(files)}
        except SourceError as exc:
            return failure("SourceNotFound", str(exc))
    return ingest(spec, source, args)


def ingest(spec: VectorIndexSpec, source: Path, args: argparse.Namespace) -> dict:
    from aiops.vectors.documents import SourceError
    from aiops.vectors.embedder import DeviceUnavailable, ModelNotFound
    from aiops.vectors.ingest import NothingValid, SourceEmpty, run_ingest
    from aiops.vectors.store import StoreError

    try:
        credentials = read_credentials(spec, Path(args.credentials_dir) if args.credentials_dir else None)
    except OSError as exc:
        return failure("CredentialsMissing", f"credentials Secret: {exc}")
    try:
        client = connect(spec, args.milvus_uri, credentials)
    except Exception as exc:  # noqa: BLE001 - pymilvus raises MilvusException or grpc errors
        return failure("MilvusUnavailable", f"{args.milvus_uri}: {exc}")
    try:
        report, started = Reporter(), time.monotonic()

        def stored(done: int, total: int) -> None:
            log.info("stored %d/%d documents", done, total)
            elapsed = time.monotonic() - started
            report(force=done == total, done=done, total=total, percent=100.0 * done / max(total, 1),
                   documentsPerSecond=round(done / elapsed, 1) if elapsed > 0 else None)

        result = run_ingest(client, spec, source, owner=args.owner, on_batch=stored)
        return result.to_json()
    except SourceError as exc:
        return failure("SourceNotFound", str(exc))
    except NothingValid as exc:
        return failure("NoValidDocuments", str(exc))
    except SourceEmpty as exc:
        return failure("SourceEmpty", str(exc))
    except ModelNotFound as exc:
        return failure("ModelNotFound", str(exc))
    except DeviceUnavailable as exc:
        return failure("DeviceUnavailable", str(exc))
    except StoreError as exc:
        return failure(exc.reason, str(exc))
    except Exception as exc:  # noqa: BLE001 - Milvus/torch failures mid-run: report, the Job retries
        log.exception("ingest failed")
        return failure("IngestFailed", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.getLogger("aiops").setLevel(logging.INFO)
    result = run(args)
    write_result(result, args.result)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
