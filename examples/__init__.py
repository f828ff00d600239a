"""The two demo use cases, end to end: synthetic data, Feast features, training, service configs.

* :mod:`~vatic.examples.fraud_detection` - transaction events keyed by customer, a gradient-boosted
  model on transaction fields plus customer and merchant aggregates from Feast;
* :mod:`~vatic.examples.product_categorization` - product-created events with a title and a
  description, sentence embeddings plus a trained linear head over a category list.

Everything is generated from a seed: no downloads, reproducible runs. Per use case, ``<case>/`` holds the event
generators (``events.py``), the history and point-in-time feature tables (``history.py``), the Feast repository
(``features/``), the trainer (``train.py``, model-server environment) and the service config (``service/``).

:func:`vatic.examples.prepare.prepare` (``vatic usecases prepare``) generates the data, applies and
materializes the Feast repositories and trains both models into the local model registry; see
:mod:`~vatic.examples.layout` for where everything goes.
"""
