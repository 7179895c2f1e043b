"""The embedded FTS3-compatible transfer service (``aso fts-server``)."""
