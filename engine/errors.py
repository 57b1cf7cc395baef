"""The engine's error types."""


class CodecError(ValueError):
    """A stream (or a request) the codec cannot decode or encode: the message says why."""


class UsageError(ValueError):
    """A request the engine cannot serve as asked (a setting, not the data): exit status 2 on
    the command line."""


class DeviceUnavailable(UsageError):
    """The device asked for does not exist here: a CUDA device with a CPU build of torch, or
    with no GPU visible."""
