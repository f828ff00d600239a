"""The two demo use cases, end to end: synthetic data, Feast features, training, service configs.

* :mod:`~vatic.serving.usecases.fraud_detection` - transaction events keyed by customer, a gradient-boosted
  model on transaction fields plus customer and merchant aggregates from Feast;
* :mod:`~vatic.serving.usecases.product_categorization` - product-created events with a title and a
  description, sentence embeddings plus a trained linear head over a category list.

Everything is generated from a seed: no downloads, reproducible runs. Per use case, ``<case>/`` holds the event
generators (``events.py``), the history and point-in-time feature tables (``history.py``), the Feast repository
(``features/``), the trainer (``train.py``, model-server environment) and the service config (``service/``).

:func:`vatic.serving.usecases.prepare.prepare` (``vatic usecases prepare``) generates the data, applies and
materializes the Feast repositories and trains both models into the local model registry; see
:mod:`~vatic.serving.usecases.layout` for where everything goes.
"""
