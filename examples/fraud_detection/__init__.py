"""Fraud detection: score each payment attempt with the probability that it is fraudulent."""
