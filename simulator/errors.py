"""Errors of the simulator: fleets that cannot run as asked, and misuse of a simulated cluster."""

from __future__ import annotations

from edge_connector.errors import ConnectorError
from taskset.errors import FleetbusError


class SimulatorError(FleetbusError):
    """Root of the errors raised by `simulator`."""


class SimulationError(SimulatorError, ConnectorError):
    """A test asked the simulator for something it cannot do (unknown object, bad pointer);
    to the connector it is an executor error like any other."""


class InvalidSimFleet(SimulatorError):
    """`--sim-clusters` / `--sim-processes` that cannot be run as asked."""


class SimFleetFailed(SimulatorError):
    """A simulated fleet did not come up: too slow, or a worker process exited."""
