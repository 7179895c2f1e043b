"""aso: asynchronous stage-out of grid job outputs through FTS3, with publication."""

__version__ = "0.1.0"
