"""The one error hierarchy of o4o-pulse; boundaries (CLI, HTTP) translate it for users."""

from __future__ import annotations


class PulseError(Exception):
    """Base of every error o4o-pulse raises on purpose."""


class ConfigError(PulseError):
    """A config file or environment variable is wrong; the message names where and the fix."""


class BrokerError(PulseError):
    """The embedded broker could not be started or reached."""


class RulesError(PulseError):
    """A rules file is wrong; the message names the file, the line and the fix."""
