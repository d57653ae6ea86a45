"""User-facing errors. Entry points print them as one line and exit non-zero."""


class SparselmError(Exception):
    """Base class: the message names the bad key, file or value and what is allowed."""


class ConfigError(SparselmError):
    """A config value is out of range or of the wrong kind."""


class DataError(SparselmError):
    """A data file is missing or malformed."""


class CheckpointError(SparselmError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


class TrainingDivergedError(SparselmError):
    """The loss or a gradient became NaN/inf."""
