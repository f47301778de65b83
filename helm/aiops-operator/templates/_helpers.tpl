{{/* The release's full name: "aiops-operator" for a release of that name, else "<release>-aiops-operator". */}}
{{- define "aiops.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aiops.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aiops.labels" -}}
{{ include "aiops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: aiops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "aiops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aiops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest, else repository:tag (tag defaults to the appVersion). Arg: dict with image, default. */}}
{{- define "aiops.imageRef" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .default $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "aiops.image" -}}
{{- include "aiops.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "aiops.workerImage" -}}
{{- if .Values.workerImage.repository -}}
{{- include "aiops.imageRef" (dict "image" .Values.workerImage "default" .Chart.AppVersion) -}}
{{- else -}}
{{- include "aiops.image" . -}}
{{- end -}}
{{- end -}}

{{- define "aiops.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{- define "aiops.leaseName" -}}
{{- default (include "aiops.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/*
The rules for namespaced objects: what the operator's code calls, derived from the API server's
audit log of a full run under this ServiceAccount (tests/cluster/test_helm_chart.py fails on a
denied request and on a rule nothing used, apart from a short commented allowlist there).
*/}}
{{- define "aiops.namespacedRules" -}}
# The three kinds: watched (Kopf event handlers feed the work queues); the controllers write status only.
- apiGroups: ["aiops.dev"]
  resources: ["modeldeployments", "vectorindexes", "trainingjobs"]
  verbs: ["list", "watch"]
- apiGroups: ["aiops.dev"]
  resources: ["modeldeployments/status", "vectorindexes/status", "trainingjobs/status"]
  verbs: ["patch"]
# Triton Deployments: created, re-templated, rolled back and scaled to zero after a failed first version.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# The previous ReplicaSet's template is what a rollback restores.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
# VectorIndex managed Milvus: its StatefulSet and data volume claim.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["create"]
# Jobs: model validation, training steps, ingestion runs; finished runs are deleted when superseded.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# ConfigMaps: Job specs, Milvus configuration, and the documents/data a VectorIndex or TrainingJob
# reads (watched, so an edited source triggers an ingest); Services: Triton and Milvus (read to
# see that a Milvus Service of that name is ours before using it).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
# NetworkPolicies in front of Triton and managed Milvus: created with them, brought in line with
# networkPolicies.from once per operator start (read when one exists, patched when it differs).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
# Secrets: created, never read: the key of each ModelDeployment's Triton model control (its
# first pods read it; the operator computes it again from its own key). The operator reads only
# its own key (a Role in the release namespace) and, in a namespace that binds the
# milvus-credentials ClusterRole to it, the credentials an external Milvus needs.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# Pod logs: the last lines (at most 64 KiB) of a running training or ingest Job's pod, whose progress
# lines go into status while it runs.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Events for `kubectl describe` (the controllers' and Kopf's warnings), a repeat counted on the first
# (patch); listed to read the kubelet's FailedMount on a validation pod whose hostPath model
# repository does not exist.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
{{- end -}}

{{/* What is cluster-wide by nature, whatever the watched namespaces. */}}
{{- define "aiops.clusterRules" -}}
# GPU capacity: nodes' allocatable GPUs, and every unfinished pod's GPU requests in all namespaces;
# pod events (Triton pods, GPU pods freeing capacity) wake the reconcile.
- apiGroups: [""]
  resources: ["nodes", "pods"]
  verbs: ["list", "watch"]
# Kopf: notices the CRDs appearing, changing and going.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}
