"""The one exception for invalid operator configuration; its own module so that backend settings models
(imported by settings.py) can raise it without importing settings.py."""


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad field."""
