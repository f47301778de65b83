"""The VectorIndex reconciler: Milvus up (managed StatefulSet, or an external URI), then
ingest runs as Jobs whenever the spec, the source ConfigMap or the schedule asks, then the live
index measured and kept above its recall floor.

Level-triggered like the other kinds: each pass reads what exists and moves on from there. An
ingest run is named by a key (spec + source version + schedule tick), so a restarted operator or
an event storm finds the same Job instead of starting a second one. A failed ingest keeps the
last good counts and index state in status and says what failed beside them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
from collections import OrderedDict

from kubernetes.client.rest import ApiException

from aiops import metrics
from aiops.api.registry import VECTOR_INDEX
from aiops.api.validation import condition_summary
from aiops.api.vectorindex import VectorIndexSpec
from aiops.builders.ingest_job import build_ingest_configmap, build_ingest_job, ingest_job_name, ingest_key
from aiops.builders.milvus import (
    GRPC_PORT,
    METRICS_PORT,
    VECTOR_INDEX_LABEL,
    build_milvus_auth_secret,
    build_milvus_configmap,
    build_milvus_service,
    build_milvus_statefulset,
    milvus_auth_secret_name,
    milvus_labels,
    milvus_name,
    milvus_uri,
)
from aiops.conditions import get_condition, now_iso
from aiops.indexing.probe import MILVUS_ROOT, IndexProbe, ProbeError
from aiops.indexing.schedule import last_tick, seconds_until_next_tick
from aiops.kube.client import KubeClient
from aiops.kube.objects import NameTaken, owned_by, owned_by_uid
from aiops.networkpolicies import NetworkPolicies
from aiops.operatorkey import OperatorKey, fingerprint
from aiops.passes import Pass, run_pass
from aiops.progress import READ_EVERY, read_progress
from aiops.rollout.pods import pod_problem, unschedulable_reason
from aiops.rollout.verdict import job_outcome, parse_step_result
from aiops.validity import judge_spec
from aiops.vectors.store import owned_message

log = logging.getLogger(__name__)
TEMPLATE_HASH = "aiops.dev/template-hash"
KEEP_INGEST_JOBS = 3  # finished ingest Jobs kept for `kubectl logs`, like a CronJob's history
NOT_READY_POLL = 10.0
SUPERSEDED_POLL = 2.0  # while a superseded ingest run's pod stops
COLLECTION_OWNED = "CollectionOwned"
INGEST_PROGRESS = ("done", "total", "documentsPerSecond", "percent", "etaSeconds")
SECURED_REMEMBERED = 4096  # managed Milvus known to be secured, for skipping the check
CREDENTIALS_URIS_ANNOTATION = "aiops.dev/milvus-uris"  # on a credentials Secret: where it may be sent


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _finished(job: dict) -> bool:
    status = job.get("status") or {}
    return bool(status.get("completionTime")) or any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or [])


def _template_hash(obj: dict) -> str:
    content = obj.get("spec", obj.get("data"))
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


class VectorIndexReconciler:
    def __init__(self, kube: KubeClient, worker_image: str, probe: IndexProbe | None = None,
                 host_paths: tuple[str, ...] | None = None, log_format: str = "text",
                 credentials_binding: str = "--clusterrole=<release>-milvus-credentials --serviceaccount=<operator>",
                 operator_key: OperatorKey | None = None, policies: NetworkPolicies | None = None):
        self.kube = kube
        self.policies = policies  # the managed Milvus's NetworkPolicy; None: not managed
        # The managed Milvus's root password derives from it; None: a Milvus without sign-in
        # (tests of the steps alone).
        self.operator_key = operator_key
        # Managed Milvus whose root password is ours, least recently secured first. Forgetting one
        # costs one more `secure`, which finds the password already changed: so a bounded LRU.
        self._secured: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        # `kubectl create rolebinding` arguments that let the operator read a namespace's Secrets
        self.credentials_binding = credentials_binding
        self.log_format = log_format  # of the ingest Jobs' lines (aiops.logs)
        self.host_paths = host_paths  # the node directories a spec may mount; None: not restricted
        self.worker_image = worker_image
        self.probe = probe or IndexProbe()

    async def reconcile(self, vi: dict, nodes: list[dict]) -> tuple[float | None, dict | None]:
        """Returns (seconds until the next look, the object as written back or None)."""
        return await run_pass(VECTOR_INDEX, vi, self.kube, lambda ctx: self._reconcile(ctx, nodes))

    async def _reconcile(self, ctx: Pass, nodes: list[dict]) -> float | None:
        spec = self._validate(ctx, nodes)
        if spec is None:
            return None
        ctx.status["observedGeneration"] = ctx.generation
        ctx.status["collection"] = spec.collection.name
        uri = await self._milvus(ctx, spec)
        if uri is None:
            owned = get_condition(ctx.status.get("conditions"), "Valid")["status"] == "False"  # CollectionOwned
            ctx.status["phase"] = "Invalid" if owned else "Provisioning" if not ctx.status.get("lastIngest") \
                else "Degraded"
            self._ready(ctx)
            return NOT_READY_POLL
        delays = [await self._ingest(ctx, spec, uri)]
        if ctx.status.get("lastIngest", {}).get("outcome") == "Succeeded" or \
                (ctx.status.get("index") or {}).get("state") == "Ready":
            delays.append(await self._index(ctx, spec, uri))
        ctx.status["phase"] = self._phase(ctx)
        self._ready(ctx)
        pending = [d for d in delays if d is not None]
        return min(pending) if pending else None

    def _validate(self, ctx: Pass, nodes: list[dict]) -> VectorIndexSpec | None:
        before = get_condition(ctx.status.get("conditions"), "Valid")
        spec, events = judge_spec(VECTOR_INDEX.kind, ctx.obj, ctx.status, nodes, self.host_paths)
        if spec is not None and before and before.get("reason") == COLLECTION_OWNED:
            # The spec alone cannot clear this: whether the collection is still another's, Milvus says.
            ctx.status["conditions"] = [before if c["type"] == "Valid" else c for c in ctx.status["conditions"]]
            events = [e for e in events if e[1] != "SpecValid"]
        ctx.events += events
        return spec

    @staticmethod
    def _ready(ctx: Pass) -> None:
        """The summary condition `kubectl get vidx` shows: the first thing not ready, or all well."""
        conditions = ctx.status.get("conditions")
        for type_ in ("Valid", "MilvusReady", "Ingested", "IndexReady"):
            c = get_condition(conditions, type_)
            if (c is None and type_ != "Valid") or (c and c["status"] != "True"):
                reason = c["reason"] if c else "Pending"
                message = c["message"] if c else f"{type_} is not known yet."
                ctx.condition("Ready", False, reason, message)
                return
        docs = (ctx.status.get("documents") or {}).get("ingested", 0)
        index = ctx.status.get("index") or {}
        ctx.condition("Ready", True, "IndexServing",
                      f"{docs} documents in {ctx.status.get('collection')}, {index.get('type')} index serving.")

    @staticmethod
    def _phase(ctx: Pass) -> str:
        last = ctx.status.get("lastIngest") or {}
        index = ctx.status.get("index") or {}
        if last.get("outcome") == "Running":
            return "Ingesting"
        good = index.get("state") == "Ready"
        index_ready = get_condition(ctx.status.get("conditions"), "IndexReady")
        if last.get("outcome") == "Failed" or (index_ready and index_ready["status"] == "False"):
            return "Degraded" if good else "Failed"
        return "Ready" if good else "Ingesting"

    # ---- Milvus ----------------------------------------------------------------------------------
    async def _milvus(self, ctx: Pass, spec: VectorIndexSpec) -> str | None:
        """The URI of a Milvus that is up, or None (MilvusReady says why)."""
        if spec.milvus.external:
            uri = spec.milvus.external.uri
            ctx.status["milvusUri"] = uri
            ctx.status.pop("credentialsSecret", None)  # the managed Milvus's; an external one has the spec's
            try:
                token = await self._credentials(ctx, spec)
                owner = await self.probe.ping(uri, token, spec.milvus.external.database, spec.collection.name)
            except ProbeError as e:
                if ctx.condition("MilvusReady", False, e.reason, f"External Milvus at {uri}: {e}"):
                    ctx.event("Warning", e.reason, f"External Milvus at {uri}: {e}")
                return None
            if owner and owner != f"{ctx.namespace}/{ctx.name}":
                message = owned_message(spec.collection.name, owner)
                message = message[0].upper() + message[1:] + "."
                if ctx.condition("Valid", False, COLLECTION_OWNED, message):
                    ctx.event("Warning", COLLECTION_OWNED, message)
                return None
            valid = get_condition(ctx.status.get("conditions"), "Valid")
            if valid and valid["reason"] == COLLECTION_OWNED:  # released: the spec's own verdict again
                ctx.condition("Valid", True, *condition_summary([]))
                ctx.event("Normal", "SpecValid", f"Collection {spec.collection.name} is no longer another's.")
            if ctx.condition("MilvusReady", True, "Reachable", f"External Milvus at {uri} answers."):
                ctx.event("Normal", "MilvusReady", f"External Milvus at {uri} answers.")
            return uri
        objects = [build_milvus_configmap(ctx.name, spec), build_milvus_service(ctx.name),
                   build_milvus_statefulset(ctx.name, spec)]
        try:
            for obj in objects:
                obj["metadata"].setdefault("annotations", {})[TEMPLATE_HASH] = _template_hash(obj)
                await self._apply(ctx, owned_by(obj, ctx.obj))
            if self.policies is not None:  # the gRPC and metrics ports, to the namespace and operator only
                await self.policies.ensure(ctx.obj, milvus_name(ctx.name), milvus_labels(ctx.name),
                                           [GRPC_PORT, METRICS_PORT])
        except NameTaken as taken:
            if ctx.condition("MilvusReady", False, taken.reason, str(taken)):
                ctx.event("Warning", taken.reason, str(taken))
            return None
        except ProbeError as e:
            if ctx.condition("MilvusReady", False, e.reason, str(e) + "."):
                ctx.event("Warning", e.reason, str(e))
            return None
        uri = milvus_uri(ctx.name, ctx.namespace)
        ctx.status["milvusUri"] = uri
        sts = await self.kube.read("StatefulSet", ctx.namespace, milvus_name(ctx.name))
        ready = ((sts or {}).get("status") or {}).get("readyReplicas", 0)
        if ready:
            try:
                await self._secure(ctx, uri)
            except ProbeError as e:
                message = f"Milvus standalone at {uri}: {e}."
                if ctx.condition("MilvusReady", False, e.reason, message):
                    ctx.event("Warning", e.reason, message)
                return None
            if ctx.condition("MilvusReady", True, "PodReady", f"Milvus standalone serves at {uri}."):
                ctx.event("Normal", "MilvusReady", f"Milvus standalone serves at {uri}.")
            return uri
        self._secured.pop(self._secured_key(ctx), None)  # (re)starting: a lost volume has the built-in password
        pods = await self.kube.list("Pod", ctx.namespace, selector=f"{VECTOR_INDEX_LABEL}={ctx.name},"
                                                        "app.kubernetes.io/name=milvus")
        problem = next((p for p in map(pod_problem, pods) if p), None)
        reason, message = (problem.reason, problem.message) if problem else \
            ("Starting", f"Milvus standalone is starting ({len(pods)} pod(s), none ready yet).")
        if reason == "Unschedulable":  # InsufficientMemory etc., in the capacity check's words
            reason = unschedulable_reason(message)
        if ctx.condition("MilvusReady", False, reason, message) and problem:
            ctx.event("Warning", reason, message)
        return None

    @staticmethod
    def _secured_key(ctx: Pass) -> tuple[str, str, str]:
        return ctx.namespace, ctx.name, ctx.obj["metadata"].get("uid", "")

    async def _managed_password(self, ctx: Pass) -> str | None:
        if self.operator_key is None:
            return None
        return await self.operator_key.derive("milvus-root", ctx.namespace, ctx.name)

    async def _secure(self, ctx: Pass, uri: str) -> None:
        """The managed Milvus signs in root with the operator's password only, and the Secret
        applications and ingest Jobs read it from exists (written once, never read back)."""
        password = await self._managed_password(ctx)
        if password is None:
            return
        name = milvus_auth_secret_name(ctx.name, fingerprint(password))
        ctx.status["credentialsSecret"] = name
        if self._secured_key(ctx) in self._secured:
            self._secured.move_to_end(self._secured_key(ctx))
            return
        await self.kube.create_unread(owned_by(build_milvus_auth_secret(ctx.name, MILVUS_ROOT, password,
                                                                        fingerprint(password)), ctx.obj))
        if await self.probe.secure(uri, password):
            ctx.event("Normal", "MilvusSecured", f"Milvus's built-in root password was replaced; clients sign "
                                                 f"in with Secret {name}")
        self._secured[self._secured_key(ctx)] = None
        if len(self._secured) > SECURED_REMEMBERED:
            self._secured.popitem(last=False)

    async def _apply(self, ctx: Pass, obj: dict) -> None:
        """Creates the object, or brings its spec/data in line when our template of it changed.
        An object of that name that this VectorIndex does not own is never touched (NameTaken)."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        existing = await self.kube.read(kind, ctx.namespace, name)
        if existing is None:
            await self.kube.create_if_missing(obj)
            return
        if not owned_by_uid(existing, ctx.obj["metadata"].get("uid")):
            raise NameTaken(kind, name, "VectorIndex")
        if kind == "Service":  # selector and ports never change for a given name
            return
        wanted = obj["metadata"]["annotations"][TEMPLATE_HASH]
        if (existing["metadata"].get("annotations") or {}).get(TEMPLATE_HASH) == wanted:
            return
        patch = {"metadata": {"annotations": {TEMPLATE_HASH: wanted}}}
        if kind == "ConfigMap":
            await self.kube.patch("ConfigMap", ctx.namespace, name, {**patch, "data": obj["data"]})
        else:  # a StatefulSet's volumeClaimTemplates are immutable: only the pod template changes
            await self.kube.patch("StatefulSet", ctx.namespace, name, {**patch, "spec": {
                "template": obj["spec"]["template"]}})
        ctx.event("Normal", "Updated", f"{kind} {name} updated to the spec")

    async def _credentials(self, ctx: Pass, spec: VectorIndexSpec) -> str | None:
        """A pymilvus token ("user:password" or the API token) from the spec's Secret, never the spec."""
        external = spec.milvus.external
        if not external:
            password = await self._managed_password(ctx)
            return f"{MILVUS_ROOT}:{password}" if password else None
        if not external.credentials:
            return None
        creds = external.credentials
        try:
            secret = await self.kube.read("Secret", ctx.namespace, creds.secret_name)
        except ApiException as e:
            if e.status != 403:
                raise
            raise ProbeError("CredentialsNotPermitted", (
                f"the operator may not read Secrets in namespace {ctx.namespace}: a namespace administrator "
                "lets it by binding the chart's milvus-credentials ClusterRole to it there (kubectl create "
                f"rolebinding aiops-milvus-credentials -n {ctx.namespace} {self.credentials_binding})")) from None
        if secret is None:
            raise ProbeError("CredentialsNotFound", f"Secret {creds.secret_name} does not exist")
        # Whoever may write the Secret says where it may go: a VectorIndex author who cannot read
        # it must not have the operator send it to a URI of their choosing.
        allowed = [u.strip() for u in ((secret["metadata"].get("annotations") or {}).get(
            CREDENTIALS_URIS_ANNOTATION) or "").split(",") if u.strip()]
        if external.uri not in allowed:
            raise ProbeError("CredentialsNotPermitted", (
                f"Secret {creds.secret_name} does not allow being sent to {external.uri}" if allowed else
                f"Secret {creds.secret_name} is not marked for Milvus") +
                f": annotate it {CREDENTIALS_URIS_ANNOTATION}={external.uri} (a comma-separated list of URIs; "
                "only someone who may edit the Secret can), and nothing reads its data until then")
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        try:
            if creds.token_key:
                return data[creds.token_key]
            return f"{data[creds.username_key]}:{data[creds.password_key]}"
        except KeyError as e:
            raise ProbeError("CredentialsNotFound", f"Secret {creds.secret_name} has no key {e}") from None

    # ---- ingestion -------------------------------------------------------------------------------
    async def _source_version(self, ctx: Pass, spec: VectorIndexSpec) -> tuple[str | None, float | None]:
        """(what the source is now, seconds until it may change by schedule); None: no source."""
        parts, delay = [], None
        if spec.source.config_map and spec.ingest.on_source_change:
            cm = await self.kube.read("ConfigMap", ctx.namespace, spec.source.config_map.name)
            if cm is None:
                return None, None
            parts.append(f"cm:{cm['metadata'].get('resourceVersion')}")
        if spec.ingest.schedule:
            created = _parse_time(ctx.obj["metadata"].get("creationTimestamp"))
            tick = last_tick(spec.ingest.schedule, dt.datetime.now(dt.UTC))
            if created is None or tick > created:
                parts.append(f"tick:{tick.isoformat()}")
            delay = seconds_until_next_tick(spec.ingest.schedule, dt.datetime.now(dt.UTC))
        return ",".join(parts) or "static", delay

    async def _ingest(self, ctx: Pass, spec: VectorIndexSpec, uri: str) -> float | None:
        version, delay = await self._source_version(ctx, spec)
        if version is None:
            name = spec.source.config_map.name
            if ctx.condition("Ingested", False, "SourceNotFound", f"ConfigMap {name} does not exist."):
                ctx.event("Warning", "SourceNotFound", f"ConfigMap {name} does not exist")
            return NOT_READY_POLL * 3
        last = ctx.status.get("lastIngest") or {}
        key = ingest_key(spec, version)
        if last.get("key") == key and last.get("outcome") in ("Succeeded", "Failed"):
            return delay
        if spec.ingest.suspend:
            ctx.condition("Ingested", last.get("outcome") == "Succeeded", "Suspended",
                          "Ingestion is suspended; the index keeps serving what it has.")
            return None
        job_name = ingest_job_name(ctx.name, key)
        job, pods = await self.kube.read_job(ctx.namespace, job_name)
        if job is None and await self._superseded_still_running(ctx, job_name):
            return SUPERSEDED_POLL
        if job is None:
            # The spec rides on the Job; one too big for that goes in a ConfigMap that belongs to the
            # Job, so pruning the Job takes it along (the pod waits in the kubelet for it).
            created = await self.kube.create_or_read(
                owned_by(build_ingest_job(ctx.name, spec, key, uri, self.worker_image, ctx.namespace,
                                          self.log_format, ctx.status.get("credentialsSecret")), ctx.obj))
            configmap = build_ingest_configmap(ctx.name, spec, key)
            if configmap is not None:
                await self.kube.create_if_missing(owned_by(configmap, created))
            ctx.status.pop("progress", None)
            ctx.status["lastIngest"] = {**{k: v for k, v in last.items() if k in ("completionTime",)},
                                        "job": job_name, "key": key, "startTime": now_iso(), "outcome": "Running"}
            ctx.event("Normal", "IngestStarted", f"Started ingest Job {job_name}")
            await self._prune_jobs(ctx, keep=job_name)
            return None
        outcome = job_outcome(job, pods, parse=parse_step_result)
        if not outcome.finished:
            ctx.status["lastIngest"] = {**last, "job": job_name, "key": key, "outcome": "Running"}
            ctx.status["lastIngest"].setdefault("startTime", now_iso())
            waiting = next((p for p in map(pod_problem, pods) if p and p.reason == "Unschedulable"), None)
            ctx.condition("Ingested", last.get("outcome") == "Succeeded" and "Unknown",
                          unschedulable_reason(waiting.message) if waiting else "Ingesting",
                          waiting.message if waiting else f"Ingest Job {job_name} is running.")
            if waiting:
                return NOT_READY_POLL
            progress = await read_progress(self.kube, ctx.namespace, pods, "embed", INGEST_PROGRESS, now_iso(),
                                           ctx.status.get("progress"))
            if progress:
                ctx.status["progress"] = progress
            return READ_EVERY
        self._record_ingest(ctx, job_name, key, outcome)
        return delay

    def _record_ingest(self, ctx: Pass, job_name: str, key: str, outcome) -> None:
        result, now = outcome.verdict, now_iso()
        ctx.status.pop("progress", None)  # the run's figures are in lastIngest now
        started = _parse_time((ctx.status.get("lastIngest") or {}).get("startTime"))
        run = {"job": job_name, "key": key, "startTime": (ctx.status.get("lastIngest") or {}).get("startTime"),
               "completionTime": now}
        if outcome.succeeded and result.get("ok"):
            run.update(outcome="Succeeded", embedded=result.get("embedded"), skipped=result.get("skipped"),
                       durationSeconds=result.get("durationSeconds"),
                       documentsPerSecond=result.get("documentsPerSecond"))
            if run["durationSeconds"] is None and started:
                run["durationSeconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3)
            failed = result.get("failed") or 0
            total = result.get("total") or 0
            held = result.get("deletionsHeld") or 0
            ctx.status["documents"] = {"total": total, "ingested": max(total - failed, 0), "pending": 0,
                                       "failed": failed, "deleted": result.get("deleted") or 0,
                                       "deletionsHeld": held}
            if result.get("sourceChecksum"):
                ctx.status["sourceChecksum"] = result["sourceChecksum"]
            index = {k: v for k, v in (result.get("index") or {}).items()
                     if k in ("type", "state", "params", "metric", "indexedRows")}
            if index.get("state") == "Ready" and (result.get("index") or {}).get("rebuilt"):
                index["builtAt"] = now
            if index:
                ctx.status["index"] = {**(ctx.status.get("index") or {}), **index}
            message = (f"{total} documents: {result.get('embedded', 0)} embedded, {result.get('skipped', 0)} "
                       f"unchanged, {result.get('deleted', 0)} deleted, {failed} failed"
                       + (f" ({result['documentsPerSecond']:.0f} docs/s)" if result.get("documentsPerSecond") else "")
                       + (f"; {held} deletions held until every line reads" if held else ""))
            ctx.condition("Ingested", True, "IngestSucceeded", message[0].upper() + message[1:] + ".")
            ctx.event("Normal" if not failed else "Warning", "IngestSucceeded", message)
            metrics.VECTOR_DOCUMENTS.labels(namespace=ctx.namespace, name=ctx.name).set(total - failed)
        else:
            reason = result.get("reason") or "IngestFailed"
            message = result.get("message") or outcome.detail or f"Job {job_name} failed"
            run.update(outcome="Failed", message=message[:1024])
            kept = " The index keeps serving what the last good ingest stored." if ctx.status.get("documents") else ""
            ctx.condition("Ingested", False, reason, f"{message}.{kept}")
            ctx.event("Warning", reason, message)
        ctx.status["lastIngest"] = run

    async def _superseded_still_running(self, ctx: Pass, job_name: str) -> bool:
        """A run of an older source version still going: it is stopped, and the new run waits
        until its pod is gone, so the old run's late writes can never land after the new ones."""
        selector = f"{VECTOR_INDEX_LABEL}={ctx.name},aiops.dev/role=ingest"
        stale = [j["metadata"]["name"] for j in await self.kube.list("Job", ctx.namespace, selector=selector)
                 if j["metadata"]["name"] != job_name and not _finished(j)]
        for name in stale:
            await self.kube.delete("Job", ctx.namespace, name)
        alive = sorted({p["metadata"].get("labels", {}).get("job-name", p["metadata"]["name"])
                        for p in await self.kube.list("Pod", ctx.namespace, selector=selector)
                        if (p["metadata"].get("labels") or {}).get("job-name") != job_name
                        and (p.get("status") or {}).get("phase") in ("Pending", "Running")})
        if not stale and not alive:
            return False
        ctx.condition("Ingested", False, "Superseding", f"The source changed while ingest Job(s) "
                      f"{', '.join(sorted(set(stale) | set(alive)))} ran; they are stopped first, so that nothing "
                      "they write lands after the new run.")
        return True

    async def _prune_jobs(self, ctx: Pass, keep: str) -> None:
        jobs = await self.kube.list("Job", ctx.namespace,
                                    selector=f"{VECTOR_INDEX_LABEL}={ctx.name},aiops.dev/role=ingest")
        done = sorted((j for j in jobs if j["metadata"]["name"] != keep and _finished(j)),
                      key=lambda j: j["metadata"].get("creationTimestamp") or "")
        for job in done[:-KEEP_INGEST_JOBS] if len(done) > KEEP_INGEST_JOBS else []:
            await self.kube.delete("Job", ctx.namespace, job["metadata"]["name"])

    # ---- the live index --------------------------------------------------------------------------
    async def _index(self, ctx: Pass, spec: VectorIndexSpec, uri: str) -> float | None:
        """Measures recall of the live index every interval; below the floor, rebuilds it."""
        recall = spec.optimization.recall
        index = dict(ctx.status.get("index") or {})
        measured = _parse_time(index.get("recallMeasuredAt"))
        due = measured is None or (dt.datetime.now(dt.UTC) - measured).total_seconds() >= recall.interval_seconds
        last = ctx.status.get("lastIngest") or {}
        if measured and last.get("completionTime") and _parse_time(last["completionTime"]) > measured:
            due = True  # new data since the last measurement
        if not recall.enabled or not due:
            if not recall.enabled and index.get("state") == "Ready":
                ctx.condition("IndexReady", True, "IndexBuilt", f"{index.get('type')} index is built and loaded.")
            return recall.interval_seconds if recall.enabled else None
        try:
            token = await self._credentials(ctx, spec)
            upkeep = await self.probe.upkeep(uri, token, spec, index.get("rows"))
            report = await self.probe.measure(uri, token, spec, index.get("searchParams"))
        except ProbeError as e:
            ctx.condition("IndexReady", False, e.reason, str(e))
            return NOT_READY_POLL * 3
        if index.get("rows") is None or upkeep.rebuilt:
            index.update(rows=upkeep.rows, builtAt=now_iso())  # rows at build: the growth policy's base
        for action in upkeep.actions():
            ctx.event("Normal", "IndexOptimized", action)
        # describe_index's `rows` are today's; status keeps the rows at build time.
        index.update({k: v for k, v in report.index.items() if k != "rows"})
        index["recallAtK"] = report.recall
        index["recallMeasuredAt"] = now_iso()
        ctx.status["index"] = index
        metrics.VECTOR_RECALL.labels(namespace=ctx.namespace, name=ctx.name).set(report.recall)
        floor = recall.min_recall
        if report.recall >= floor:
            ctx.condition("IndexReady", True, "RecallAboveFloor",
                          f"{index.get('type')} index: recall@{recall.k} {report.recall:.3f} "
                          f"(floor {floor:g}) on {report.queries} held-out queries.")
            return recall.interval_seconds
        message = (f"recall@{recall.k} of the {index.get('type')} index is {report.recall:.3f}, below the floor "
                   f"{floor:g} ({report.queries} queries)")
        if spec.optimization.rebuild.enabled:
            try:
                action, raised = await self.probe.improve(uri, token, spec, report.recall, index.get("searchParams"))
                if raised:
                    index["searchParams"] = raised  # Milvus keeps no search parameters: status does
            except ProbeError as e:
                action = f"rebuild failed: {e}"
            message += f"; {action}"
            index["recallMeasuredAt"] = None  # measure again right after the rebuild
            ctx.status["index"] = {k: v for k, v in index.items() if v is not None}
        if ctx.condition("IndexReady", False, "RecallBelowFloor", message[0].upper() + message[1:] + "."):
            ctx.event("Warning", "RecallBelowFloor", message)
        return NOT_READY_POLL
