"""The service config: ONE definition read by the model server, the gateway, the streaming job and the renderer.

A service lives in a folder: ``service.yaml`` holds the shared defaults, ``staging.yaml`` and
``production.yaml`` (optional) override them per environment. :func:`load_service` merges them, validates the
result with :class:`ServiceConfig` and reports every problem as one line naming file, line and fix.
"""

from vatic.serving.config.base import TensorSpec
from vatic.serving.config.graph import GraphSpec, StepSpec
from vatic.serving.config.loader import load_service, load_yaml_with_lines
from vatic.serving.config.model import (
    AutoscalingSpec,
    CanarySpec,
    FeatureSpec,
    GpuSpec,
    ModelSpec,
    MonitoringSpec,
    RegistrySpec,
    ResourcesSpec,
    RetrainSpec,
    ServiceConfig,
    ServingSpec,
    ShadowSpec,
    StreamingSpec,
)

__all__ = [
    "AutoscalingSpec",
    "CanarySpec",
    "FeatureSpec",
    "GpuSpec",
    "GraphSpec",
    "ModelSpec",
    "MonitoringSpec",
    "RegistrySpec",
    "ResourcesSpec",
    "RetrainSpec",
    "ServiceConfig",
    "ServingSpec",
    "ShadowSpec",
    "StepSpec",
    "StreamingSpec",
    "TensorSpec",
    "load_service",
    "load_yaml_with_lines",
]
