"""The full-custom tier: a FastAPI app speaking MLServer's V2 REST endpoints (:mod:`.app`)."""

from vatic.serving.runtimes.custom.app import ModelFailed, ModelHooks, ServedModel, V2Error, create_app

__all__ = ["ModelFailed", "ModelHooks", "ServedModel", "V2Error", "create_app"]
