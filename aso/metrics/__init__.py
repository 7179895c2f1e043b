"""Prometheus metrics: the ``/metrics`` endpoint of ``aso server`` and ``aso fts-server``
(:mod:`aso.metrics.server`), the store gauges they compute at scrape time
(:mod:`aso.metrics.collectors`), and the per-pass metrics of the cron components
(:mod:`aso.metrics.passes`). Every metric name is declared once, in :mod:`aso.metrics.names`."""
