"""Model kinds: one spec module each (see worldmill.training.registry)."""
