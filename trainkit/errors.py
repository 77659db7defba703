"""User-facing error types, one per area. `cli` maps each to exit code 2."""


class TrainkitError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(TrainkitError):
    """A bad config file, `--set` override or command-line argument."""


class DataError(TrainkitError):
    """Missing, empty or undecodable data."""


class CheckpointError(TrainkitError):
    """A checkpoint that is missing, truncated, unsafe or of another model."""


class RunDirError(TrainkitError):
    """A run directory that would be overwritten, or cannot be written."""


class DeviceError(TrainkitError):
    """A device that does not exist on this machine."""


class TrainingError(Exception):
    """A runtime failure during training (NaN loss, a failed save): exit code 1."""

    exit_code = 1
