"""revqom: communication-efficient cooperative perception with residual vector quantization."""

__version__ = "0.1.0"
