"""The one error type of the data package."""

from __future__ import annotations


class DatasetError(Exception):
    """Bad or missing dataset input; the message names the file (and frame, where known)."""
