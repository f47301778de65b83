"""Operator-wide Kopf settings, applied at start-up."""

from __future__ import annotations

import json
import logging
import os

import kopf

from aiops.builders.network import check_peers, workload_peers
from aiops.builders.triton import MANAGED_BY
from aiops.kube.lease import SERVICE_ACCOUNT_NAMESPACE
from aiops.logs import FORMATS

GROUP = "aiops.dev"
OWNED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"  # what the child informers watch
DEFAULT_WORKER_IMAGE = "ghcr.io/aiops-operator/aiops-worker:0.1.0"  # the Dockerfile's worker target
VALIDATION_JOB_TTL_SECONDS = 3600
STEP_JOB_TTL_SECONDS = 86400
MIN_JOB_TTL_SECONDS = 60
DEFAULT_ALLOWED_HOST_PATHS = ("/var/lib/aiops",)


def _job_ttl(variable: str, default: int) -> int:
    """Seconds from AIOPS_*_TTL_SECONDS; at least a minute, so a Job is never deleted before the
    operator saw it end."""
    raw = os.environ.get(variable, "")
    try:
        seconds = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{variable} must be a whole number of seconds, not {raw!r}") from None
    return max(seconds, MIN_JOB_TTL_SECONDS)


def validation_job_ttl() -> int:
    """How long a finished validation Job and its pod stay (AIOPS_VALIDATION_JOB_TTL_SECONDS,
    default an hour) before Kubernetes deletes them: time enough to read their logs, and no pile
    of one Job per version. The verdict is in the status by then; a Job gone before it was read is
    simply run again."""
    return _job_ttl("AIOPS_VALIDATION_JOB_TTL_SECONDS", VALIDATION_JOB_TTL_SECONDS)


def step_job_ttl() -> int:
    """How long a finished TrainingJob step Job and its pod stay (AIOPS_STEP_JOB_TTL_SECONDS,
    default a day): each step's result is in status once its Job ends, so nothing needs the Job
    after that but `kubectl logs`; without a TTL every run left four Jobs behind for good."""
    return _job_ttl("AIOPS_STEP_JOB_TTL_SECONDS", STEP_JOB_TTL_SECONDS)


def allowed_host_paths() -> tuple[str, ...]:
    """The node directories (each with everything under it) that a custom resource may mount as a
    hostPath: AIOPS_ALLOWED_HOST_PATHS, comma-separated absolute paths (the Helm value
    hostPaths.allowed); unset, the reference node's /var/lib/aiops; empty, none. A CR naming any
    other directory gets Valid=False (HostPathNotAllowed): its author would otherwise reach any node
    directory through the operator's pods."""
    raw = os.environ.get("AIOPS_ALLOWED_HOST_PATHS")
    if raw is None:
        return DEFAULT_ALLOWED_HOST_PATHS
    paths = tuple(p.strip() for p in raw.split(",") if p.strip())
    relative = [p for p in paths if not p.startswith("/")]
    if relative:
        raise ValueError(f"AIOPS_ALLOWED_HOST_PATHS takes absolute paths, not {', '.join(relative)}")
    return paths


def operator_namespace() -> str:
    """The operator's own namespace, where its key Secret lives: $POD_NAMESPACE (the chart sets it),
    else the pod's namespace, else `default` (an operator run outside the cluster, in development)."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "default"


def credentials_binding() -> str:
    """What `kubectl create rolebinding` needs to let the operator read Secrets in one namespace
    (AIOPS_CREDENTIALS_BINDING, set by the chart to its ClusterRole and ServiceAccount)."""
    return os.environ.get("AIOPS_CREDENTIALS_BINDING") or \
        "--clusterrole=aiops-operator-milvus-credentials --serviceaccount=<operator namespace>:aiops-operator"


def network_policy_peers() -> list[dict] | None:
    """Who may connect to the servers the operator runs (aiops.builders.network): their own
    namespace, the operator's, and AIOPS_NETWORK_POLICY_PEERS, a JSON list of NetworkPolicyPeers
    (the Helm value networkPolicies.from). None when AIOPS_NETWORK_POLICIES is false
    (networkPolicies.enabled): the operator then makes no NetworkPolicy."""
    enabled = os.environ.get("AIOPS_NETWORK_POLICIES", "true").lower()
    if enabled not in ("true", "false"):
        raise ValueError(f"AIOPS_NETWORK_POLICIES must be true or false, not {enabled!r}")
    if enabled == "false":
        return None
    raw = os.environ.get("AIOPS_NETWORK_POLICY_PEERS") or "[]"
    try:
        extra = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"AIOPS_NETWORK_POLICY_PEERS is not JSON: {e}") from None
    return workload_peers(operator_namespace(), check_peers(extra))


def log_format() -> str:
    """AIOPS_LOG_FORMAT (the Helm value logFormat): text or json, for the operator and its Jobs."""
    value = os.environ.get("AIOPS_LOG_FORMAT", "text")
    if value not in FORMATS:
        raise ValueError(f"AIOPS_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def worker_image() -> str:
    """The image of the Jobs that run the project's worker (validation, training, ingestion)."""
    return os.environ.get("AIOPS_WORKER_IMAGE", DEFAULT_WORKER_IMAGE)


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf keeps a "last handled" copy of each object for its create/update/delete handlers and
    builds it (a deep copy of the body) on every watch event of every watched kind. Our handlers
    are all event handlers feeding work queues, which never look at it. Building it was about a
    third of the event loop's time in a profile of bench_reconcile (100 objects at once). A
    create/update/delete handler added later needs Kopf's `AnnotationsDiffBaseStorage` back."""

    def build(self, *, body, extra_fields=None):
        return {}

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # Our own annotation prefix, so state never collides with other Kopf operators.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Kopf turns per-object log lines at this level into Events. INFO would post one Event per
    # handled pod or Job event ("Handler succeeded"): an API write each. Our controllers post
    # the Events a person needs themselves; Kopf only posts its warnings and errors.
    settings.posting.level = logging.WARNING
    # Reconnect watches periodically: a silently dead connection must not stall the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30


@kopf.on.login()
def login(**kwargs) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount. Elsewhere: $KUBECONFIG, read now rather than when some
    library was imported (the kubernetes client captures it at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
