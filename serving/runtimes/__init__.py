"""The serving layer on MLServer: the three tiers of a vatic model server.

* ``no-code`` - :mod:`vatic.serving.runtimes.repository` writes MLServer's ``settings.json`` and the model's
  ``model-settings.json`` from the service config, after materialising the verified artifacts from the
  registry; MLServer's own sklearn / xgboost / lightgbm runtimes serve them
  (:mod:`vatic.serving.runtimes.nocode` adds input validation on top of them).
* ``low-code`` - :class:`vatic.serving.runtimes.base.VaticModel`: subclass it, implement
  ``load_artifacts(path)`` and ``predict_batch(inputs)``; decoding, validation (400 for bad input), output
  encoding and device selection are done for you.
* ``full-custom`` - :mod:`vatic.serving.runtimes.custom`: a FastAPI app speaking the same V2 endpoints.

This package's ``__init__`` imports nothing: :mod:`~vatic.serving.runtimes.repository` and
:mod:`~vatic.serving.core.contract` run in both environments, the other modules only where MLServer is
installed (``.venv/server``).
"""
