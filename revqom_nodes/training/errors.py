"""The training package's exception type."""


class TrainingError(ValueError):
    """A bad training config, dataset, checkpoint or run state."""
