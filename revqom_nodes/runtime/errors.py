"""The runtime's one exception type for bad configuration (messages are rejected, never raised)."""


class RuntimeConfigError(ValueError):
    """A runtime setting or model file cannot be used (unknown device, missing codec, bad pose)."""
