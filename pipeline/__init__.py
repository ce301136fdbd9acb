"""o4o-pulse: the pure pipeline (config, ingest, state, sketches, readout, rules, alerting) and its tools."""

__version__ = "0.1.0"
"""The one definition of the version: pyproject.toml reads it, `/health` and `pulse --version` show it."""
