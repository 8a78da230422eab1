"""Evaluation: validation passes, detection and view metrics, their plots."""
