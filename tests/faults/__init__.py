"""Fault suites: real processes killed, real servers stopped and started, seeded and repeatable."""
