"""The projector: read models of the fleet in SQLite, folded from EVENTS and REPORTS.

`projection` says how each event changes the tables; `db` is the only module that touches
SQLite (aiosqlite); `service` follows the streams; `queries` are the reads the CLI and the HTTP
API share.
"""
