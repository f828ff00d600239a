"""The full-custom tier: a FastAPI app speaking MLServer's V2 REST endpoints (see :mod:`vatic.serving.custom.app`)."""

from vatic.serving.custom.app import ModelFailed, Predictor, ServedModel, V2Error, create_app

__all__ = ["ModelFailed", "Predictor", "ServedModel", "V2Error", "create_app"]
