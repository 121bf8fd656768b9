"""worldmill.models."""
