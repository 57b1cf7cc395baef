"""The engine's error type."""


class CodecError(ValueError):
    """A stream (or a request) the codec cannot decode or encode: the message says why."""
