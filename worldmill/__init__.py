"""worldmill: workflow engine for world-model data and training DAGs."""

__version__ = "0.1.0"
