"""Metrics, statistics, plots and report pages."""
