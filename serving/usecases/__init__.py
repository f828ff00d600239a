"""The two demo use cases, end to end: synthetic data, Feast features, training, service configs.

* :mod:`~vatic.serving.usecases.fraud_detection` - transaction events keyed by customer, a gradient-boosted
  model on transaction fields plus customer and merchant aggregates from Feast;
* :mod:`~vatic.serving.usecases.product_categorization` - product-created events with a title and a
  description, sentence embeddings plus a trained linear head over a category list.

Everything is generated from a seed: no downloads, reproducible runs.
"""
