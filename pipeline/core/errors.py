"""Errors a user can fix: the CLI prints their message on one line, no traceback."""


class PipelineError(Exception):
    """A problem with the user's input, shown as one line per problem."""


class ConfigError(PipelineError):
    """An unknown key, a wrong type or an invalid value in the config."""


class DataError(PipelineError):
    """Bad or missing input files; the message names each file and its problem."""


class ClusterError(PipelineError):
    """A worker of a training cluster failed: this process's collectives are aborted for good.

    The CLI prints the message and ends the process at once (exit 2), without the
    interpreter's shutdown, which TensorFlow's aborted collectives can make noisy.
    """
