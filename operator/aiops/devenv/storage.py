"""A local-path provisioner for the simulated nodes, as rancher's local-path-provisioner (k3s, kind)
does it: a default StorageClass, a hostPath PersistentVolume in a directory on this machine for
every claim of that class, and the directory removed when a Delete-policy volume is released.

Kubernetes 1.20 here has no provisioner, so without this StatefulSet volumeClaimTemplates and user
PVCs would stay Pending. The control plane does the rest for real: the PV controller binds the
claim to the volume created here (the external-provisioner protocol: a PV whose claimRef names
the claim), the scheduler waits for the binding, the pv-protection controller guards deletion.

The class binds WaitForFirstConsumer: the real scheduler picks the node first and writes it on the
claim (`volume.kubernetes.io/selected-node`), then the agent that runs that node provisions. So
with several agents (tests start a second one) exactly one provisions each claim, in its own
state dir, and the PV's node affinity keeps its pods on the node that has the data. Immediate
binding would provision before any node is chosen: every agent would race for every claim. The
price: a claim without a pod stays Pending ("waiting for first consumer"), as on kind or k3s.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.devenv.kubemirror import Mirror

log = logging.getLogger(__name__)

STORAGE_CLASS = "local-path"
PROVISIONER = "aiops.dev/local-path"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
NODE_HOSTNAME_LABEL = "kubernetes.io/hostname"


def storage_class() -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
                         "labels": {"app.kubernetes.io/managed-by": "aiops-node-agent"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}


def volume_name(claim: client.V1PersistentVolumeClaim) -> str:
    return f"pvc-{claim.metadata.uid}"  # as external-provisioner names them


def volume_dir(root: Path, claim: client.V1PersistentVolumeClaim) -> Path:
    m = claim.metadata
    return root / f"{volume_name(claim)}_{m.namespace}_{m.name}"


def wants_volume(claim: client.V1PersistentVolumeClaim, nodes: set[str]) -> bool:
    """An unbound, live claim of our class whose pod the scheduler placed on one of our nodes."""
    selected = (claim.metadata.annotations or {}).get(SELECTED_NODE)
    return (claim.spec.storage_class_name == STORAGE_CLASS and not claim.spec.volume_name
            and not claim.metadata.deletion_timestamp and selected in nodes)


def build_volume(claim: client.V1PersistentVolumeClaim, path: Path, node: str) -> dict:
    """The PV for `claim` (pure): its size as asked, bound to it by claimRef, pinned to `node`."""
    m = claim.metadata
    size = (claim.spec.resources.requests or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": volume_name(claim), "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": claim.spec.access_modes or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": claim.spec.volume_mode or "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": m.namespace,
                         "name": m.name, "uid": m.uid},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": NODE_HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}},
        },
    }


def releasable(pv: client.V1PersistentVolume, root: Path) -> Path | None:
    """The directory to delete, for a released Delete-policy volume this provisioner made here."""
    if (pv.metadata.annotations or {}).get(PROVISIONED_BY) != PROVISIONER:
        return None
    if pv.status.phase != "Released" or pv.spec.persistent_volume_reclaim_policy != "Delete":
        return None
    path = Path(pv.spec.host_path.path) if pv.spec.host_path else None
    if path is None or path.parent != root:  # another agent's volume, or not one of ours
        return None
    return path


class LocalPathProvisioner:
    """Provisions and deletes volumes for claims on `nodes`, in directories under `root`."""

    def __init__(self, api: client.ApiClient, nodes: list[str], root: Path, stop: threading.Event):
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.nodes, self.root, self.stop = set(nodes), Path(root), stop
        self._lock = threading.Lock()
        self.claims = Mirror(self.core.list_persistent_volume_claim_for_all_namespaces,
                             self.reconcile, stop, "PersistentVolumeClaims")
        self.volumes = Mirror(self.core.list_persistent_volume, self.reconcile, stop,
                              "PersistentVolumes")

    def ensure_storage_class(self) -> None:
        """Creates the default class unless one of that name exists (ours from an earlier run,
        or a user's: theirs wins)."""
        try:
            self.storage.create_storage_class(storage_class())
        except ApiException as e:
            if e.status != 409:
                raise

    def reconcile(self) -> None:
        """Provision what is wanted, delete what was released: from the mirrors' current state,
        so a missed event is made up by the next one."""
        if not (self.claims.synced.is_set() and self.volumes.synced.is_set()):
            return
        with self._lock:
            existing = {pv.metadata.name for pv in self.volumes.items()}
            for claim in self.claims.items():
                if wants_volume(claim, self.nodes) and volume_name(claim) not in existing:
                    self._provision(claim)
            for pv in self.volumes.items():
                path = releasable(pv, self.root)
                if path is not None and not pv.metadata.deletion_timestamp:
                    self._delete(pv, path)

    def _provision(self, claim: client.V1PersistentVolumeClaim) -> None:
        node = claim.metadata.annotations[SELECTED_NODE]
        path = volume_dir(self.root, claim)
        path.mkdir(parents=True, exist_ok=True)
        # World-writable, as rancher's helper pod makes it (`mkdir -m 0777`): fsGroup does not
        # apply to hostPath volumes, and pods run as non-root users of their images' choosing.
        path.chmod(0o777)
        try:
            self.core.create_persistent_volume(build_volume(claim, path, node))
            log.info("provisioned %s for claim %s/%s at %s", volume_name(claim),
                     claim.metadata.namespace, claim.metadata.name, path)
        except ApiException as e:
            if e.status != 409:  # 409: provisioned already, the mirror had not seen it yet
                raise

    def _delete(self, pv: client.V1PersistentVolume, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        try:
            self.core.delete_persistent_volume(pv.metadata.name)
            log.info("deleted released volume %s and %s", pv.metadata.name, path)
        except ApiException as e:
            if e.status != 404:
                raise


def run_until_signalled(api: client.ApiClient, nodes: list[str], root: Path) -> int:
    """The provisioner as a process of its own (the real node's): until SIGTERM or SIGINT."""
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    provisioner = LocalPathProvisioner(api, nodes, root, stop)
    provisioner.ensure_storage_class()
    threads = [threading.Thread(target=m.run, name=n, daemon=True)
               for m, n in ((provisioner.claims, "claims"), (provisioner.volumes, "volumes"))]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(timeout=5)
    return 0
