"""One module per `fleetbus` subcommand; each exposes `register(subparsers)`.

A handler returns the process exit code. Handlers raise `FleetbusError` for anything the user
can fix; `fleetbus.cli` prints those as one clear line and exits non-zero, without a traceback.
"""
