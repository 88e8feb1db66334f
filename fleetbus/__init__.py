"""fleetbus: the CLI and composition root that wires the components together."""
