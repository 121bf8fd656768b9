"""worldmill.tasks."""
