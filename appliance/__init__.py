"""Backtrack appliance: a headless multi-output backtrack player for live bands."""

__version__ = "0.1.0"
