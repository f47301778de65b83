"""The chart's ServiceMonitor and PodMonitors as the Prometheus Operator turns them into scrape
jobs, for the local Prometheus (aiops.devenv.prometheus): Kubernetes service discovery against a
cluster's API server, the monitor's selector and port as `keep` rules, and the target labels the
Prometheus Operator sets (namespace, pod, container, service, job, endpoint). That is what makes a
test of "Prometheus scrapes Triton, Milvus and the operator" a test of the chart's selectors and
ports against real pods, with no Prometheus Operator on the machine.

Debian's Prometheus lacks Kubernetes discovery, so `FileDiscovery` lists the pods and Endpoints
and writes them as file_sd targets with the labels Prometheus's own discovery attaches; the
selecting is still Prometheus's relabeling.

Covered: selector.matchLabels, namespaceSelector (any, matchNames, or the monitor's own
namespace), endpoints' port (by name), path, interval, scrapeTimeout, honorLabels and
relabelings; anything else raises, so a monitor using it is never tested by half."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

SUPPORTED_ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings"}
RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "separator": "separator",
                "regex": "regex", "replacement": "replacement", "action": "action", "modulus": "modulus"}


def _sanitize(label: str) -> str:
    """A Kubernetes label name as Prometheus's discovery meta label names it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _sd(role: str, monitor: dict, kubeconfig: str) -> dict:
    selector = monitor["spec"].get("namespaceSelector") or {}
    sd: dict = {"role": role, "kubeconfig_file": kubeconfig}
    if not selector.get("any"):
        sd["namespaces"] = {"names": selector.get("matchNames") or [monitor["metadata"]["namespace"]]}
    return sd


def _keep_labels(meta: str, match_labels: dict[str, str]) -> list[dict]:
    return [{"action": "keep", "source_labels": [f"__meta_kubernetes_{meta}_label_{_sanitize(k)}",
                                                 f"__meta_kubernetes_{meta}_labelpresent_{_sanitize(k)}"],
             "regex": f"({re.escape(v)});true"} for k, v in sorted(match_labels.items())]


def _relabelings(endpoint: dict) -> list[dict]:
    out = []
    for rule in endpoint.get("relabelings") or []:
        unknown = set(rule) - set(RELABEL_KEYS)
        if unknown:
            raise ValueError(f"relabeling fields not covered: {sorted(unknown)}")
        out.append({RELABEL_KEYS[k]: v for k, v in rule.items()})
    return out


def _check(monitor: dict, endpoint: dict) -> None:
    selector = monitor["spec"].get("selector") or {}
    if set(selector) - {"matchLabels"}:
        raise ValueError(f"{monitor['kind']} {monitor['metadata']['name']}: only selector.matchLabels is covered")
    unknown = set(endpoint) - SUPPORTED_ENDPOINT_KEYS
    if unknown:
        raise ValueError(f"{monitor['kind']} {monitor['metadata']['name']}: endpoint fields not covered: "
                         f"{sorted(unknown)}")


def _job(monitor: dict, index: int, endpoint: dict, kind: str) -> dict:
    job: dict = {"job_name": f"{kind}/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/{index}",
                 "honor_labels": bool(endpoint.get("honorLabels", False)),
                 "metrics_path": endpoint.get("path", "/metrics")}
    if endpoint.get("interval"):
        job["scrape_interval"] = endpoint["interval"]
    if endpoint.get("scrapeTimeout"):
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    return job


def _jobs(monitor: dict, endpoints: str, kind: str, role: str, kubeconfig: str,
          relabel: Callable[[dict], list[dict]]) -> list[dict]:
    """One job per endpoint of `monitor`: discovery of `role`, then `relabel(endpoint)`'s rules
    and the endpoint's own relabelings."""
    jobs = []
    for i, endpoint in enumerate(monitor["spec"][endpoints]):
        _check(monitor, endpoint)
        job = _job(monitor, i, endpoint, kind)
        job["kubernetes_sd_configs"] = [_sd(role, monitor, kubeconfig)]
        job["relabel_configs"] = [*relabel(endpoint), *_relabelings(endpoint)]
        jobs.append(job)
    return jobs


def pod_monitor_jobs(monitor: dict, kubeconfig: str) -> list[dict]:
    meta = monitor["metadata"]
    return _jobs(monitor, "podMetricsEndpoints", "podMonitor", "pod", kubeconfig, lambda endpoint: [
        *_keep_labels("pod", monitor["spec"]["selector"].get("matchLabels") or {}),
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"]},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ])


def service_monitor_jobs(monitor: dict, kubeconfig: str) -> list[dict]:
    return _jobs(monitor, "endpoints", "serviceMonitor", "endpoints", kubeconfig, lambda endpoint: [
        *_keep_labels("service", monitor["spec"]["selector"].get("matchLabels") or {}),
        {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": endpoint["port"]},
        {"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                           "__meta_kubernetes_endpoint_address_target_name"],
         "separator": ";", "regex": "Pod;(.*)", "replacement": "$1", "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ])


def scrape_jobs(objects: list[dict], kubeconfig: str) -> list[dict]:
    """Scrape jobs for every ServiceMonitor and PodMonitor among `objects` (a chart's rendering)."""
    jobs = []
    for obj in objects:
        if obj.get("kind") == "PodMonitor":
            jobs += pod_monitor_jobs(obj, kubeconfig)
        elif obj.get("kind") == "ServiceMonitor":
            jobs += service_monitor_jobs(obj, kubeconfig)
    return jobs


# ---- discovery ---------------------------------------------------------------------------------
# Debian's Prometheus is built without Kubernetes service discovery (`kubernetes_sd_configs` is
# not a field there). Discovery then runs here, as Prometheus's discovery/kubernetes pod.go and
# endpoints.go do it: one target per container port (pod role) or per Endpoints address and port
# (endpoints role), carrying the same __meta_kubernetes_* labels, written as file_sd target
# groups. Prometheus's own relabeling then does the selecting, exactly as with its built-in SD.

def _meta_labels(prefix: str, values: dict[str, str] | None) -> dict[str, str]:
    out = {}
    for k, v in (values or {}).items():
        out[f"__meta_kubernetes_{prefix}_label_{_sanitize(k)}"] = v
        out[f"__meta_kubernetes_{prefix}_labelpresent_{_sanitize(k)}"] = "true"
    return out


def _pod_labels(pod: dict) -> dict[str, str]:
    meta, status = pod["metadata"], pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    labels = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
              "__meta_kubernetes_pod_ip": status.get("podIP", ""), "__meta_kubernetes_pod_uid": meta.get("uid", ""),
              "__meta_kubernetes_pod_node_name": (pod.get("spec") or {}).get("nodeName", ""),
              "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
              "__meta_kubernetes_pod_phase": status.get("phase", ""),
              "__meta_kubernetes_pod_ready": str(ready).lower(), **_meta_labels("pod", meta.get("labels"))}
    if owner:
        labels["__meta_kubernetes_pod_controller_kind"] = owner["kind"]
        labels["__meta_kubernetes_pod_controller_name"] = owner["name"]
    return labels


def pod_targets(pods: list[dict]) -> list[dict]:
    """Target groups of the pod role: each container port of each pod with an IP."""
    groups = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        base = _pod_labels(pod)
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **base, "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_init": "false",
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP")}})
    return groups


def endpoints_targets(endpoints: list[dict], services: dict[str, dict], pods: dict[str, dict]) -> list[dict]:
    """Target groups of the endpoints role: each address and port of each Endpoints object, with
    its Service's labels and, for an address backed by a pod, the pod's."""
    groups = []
    for ep in endpoints:
        meta = ep["metadata"]
        service = services.get(meta["name"])
        base = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_endpoints_name": meta["name"],
                **_meta_labels("endpoints", meta.get("labels"))}
        if service is not None:
            base["__meta_kubernetes_service_name"] = service["metadata"]["name"]
            base.update(_meta_labels("service", service["metadata"].get("labels")))
        for subset in ep.get("subsets") or []:
            for ready, addresses in (("true", subset.get("addresses") or []),
                                     ("false", subset.get("notReadyAddresses") or [])):
                for address in addresses:
                    target = address.get("targetRef") or {}
                    pod = pods.get(target.get("name", "")) if target.get("kind") == "Pod" else None
                    for port in subset.get("ports") or []:
                        labels = {**base, "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                                  "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
                                  "__meta_kubernetes_endpoint_ready": ready}
                        if target:
                            labels["__meta_kubernetes_endpoint_address_target_kind"] = target.get("kind", "")
                            labels["__meta_kubernetes_endpoint_address_target_name"] = target.get("name", "")
                        if pod is not None:
                            labels.update(_pod_labels(pod))
                            serving = next((c["name"] for c in pod["spec"]["containers"] if any(
                                p["containerPort"] == port["port"] for p in c.get("ports") or [])), None)
                            if serving:
                                labels["__meta_kubernetes_pod_container_name"] = serving
                        groups.append({"targets": [f"{address['ip']}:{port['port']}"], "labels": labels})
    return groups


def with_file_discovery(jobs: list[dict], directory: Path) -> list[dict]:
    """`jobs` with each kubernetes_sd_configs replaced by a file_sd file in `directory`, which
    `FileDiscovery.refresh` fills."""
    out = []
    for i, job in enumerate(jobs):
        (sd,) = job["kubernetes_sd_configs"]
        rest = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
        path = directory / f"job-{i}-{sd['role']}.json"
        path.write_text("[]")
        out.append({**rest, "file_sd_configs": [{"files": [str(path)], "refresh_interval": "1s"}]})
    return out


class FileDiscovery:
    """Fills the file_sd files of `with_file_discovery` from the API server (`core`: a kubernetes
    CoreV1Api): the pods or Endpoints of each job's namespaces (all of them for `any`)."""

    def __init__(self, core, jobs: list[dict], directory: Path):
        self.core, self.directory = core, directory
        self.plan = [(directory / f"job-{i}-{j['kubernetes_sd_configs'][0]['role']}.json",
                      j["kubernetes_sd_configs"][0]) for i, j in enumerate(jobs)]

    def _list(self, kind: str, namespaces: list[str] | None) -> list[dict]:
        api = self.core.api_client
        if namespaces is None:
            items = getattr(self.core, f"list_{kind}_for_all_namespaces")().items
        else:
            items = [i for ns in namespaces for i in getattr(self.core, f"list_namespaced_{kind}")(ns).items]
        return [api.sanitize_for_serialization(i) for i in items]

    def refresh(self) -> None:
        for path, sd in self.plan:
            namespaces = (sd.get("namespaces") or {}).get("names")
            pods = self._list("pod", namespaces)
            if sd["role"] == "pod":
                groups = pod_targets(pods)
            else:
                services = {s["metadata"]["name"]: s for s in self._list("service", namespaces)}
                groups = endpoints_targets(self._list("endpoints", namespaces), services,
                                           {p["metadata"]["name"]: p for p in pods})
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(groups))
            tmp.replace(path)  # Prometheus watches the file: never let it read half of one
