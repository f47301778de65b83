"""The aiops.dev/v1alpha1 API: pydantic models of ModelDeployment, VectorIndex and TrainingJob are
the single source of truth; the CRDs (`crds`), the reference (`apidocs`) and the semantic checks
(`validation`) are derived from them."""

from aiops.api.common import API_VERSION, GROUP, VERSION, Condition
from aiops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from aiops.api.registry import KINDS, KindInfo, kind_info
from aiops.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from aiops.api.vectorindex import VectorIndexSpec, VectorIndexStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "KindInfo",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "VectorIndexSpec",
    "VectorIndexStatus",
    "kind_info",
]
