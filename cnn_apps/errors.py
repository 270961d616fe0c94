"""Errors that carry a message meant for the user (the CLI prints them without a traceback)."""


class CnnAppsError(ValueError):
    """Bad input from the user: a file, an argument or a config value.

    The message names the input and says what was expected.
    """


class ConfigError(CnnAppsError):
    """A config file or a ``key=value`` override is invalid."""


class DataError(CnnAppsError):
    """A dataset file or folder is missing, empty or corrupt."""


class WeightsError(CnnAppsError):
    """A weights file does not exist or does not match the model."""
