"""worldmill.deployments."""
