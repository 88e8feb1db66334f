"""fleetbus benchmarks: scale figures P1 to P6, measured here, written to BENCHMARKS.md.

Every number in the report comes from a run of `python -m bench`; a figure whose component is
missing, or whose run failed, says so instead of showing a number. Ratios are always between two
measurements taken in the same run, on the same machine, so that they mean something on any box.
"""
