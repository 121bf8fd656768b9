"""worldmill.flows."""
