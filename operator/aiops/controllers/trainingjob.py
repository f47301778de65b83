"""TrainingJob handlers. So far: semantic validation (the Valid condition); data versioning,
training and optimization build on it."""

from aiops.api.registry import TRAINING_JOB
from aiops.controllers.validity import validate_only

validate_only(TRAINING_JOB)
