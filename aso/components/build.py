"""One pass of any component, built from a configuration.

The command line (``aso transfer`` ... ``aso publisher``) and the demo build their passes
here, so a component is put together (settings, retry policy, proxies, transfer tools,
state backend, catalog) in one place only. A pass is built when first called, so what it
opens is opened under the component's lock (:func:`aso.components.runner.run_passes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("aso.build")

#: the components in the order cron runs them
COMPONENTS = ("transfer", "stager", "monitor", "reporter", "publisher", "retry-manager")

Progress = Callable[[int, int], None]


class ComponentPass:
    """``one_pass(progress=None)`` runs one pass and returns its summary (with ``line()``,
    ``as_dict()`` and ``errors``); ``close()`` closes what the pass opened itself (a backend
    or catalog given to :func:`build_pass` stays the caller's)."""

    def __init__(self, name: str, config: Any, backend: Any = None, *, catalog: Any = None, proxies: Any = None,
                 tools: Any = None):
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r} (one of {', '.join(COMPONENTS)})")
        self.name = name
        self.config = config
        self._backend, self._catalog, self._proxies, self._tools = backend, catalog, proxies, tools
        self._owned: list[Any] = []
        self._run: Callable[[Progress | None], Any] | None = None
        self._heartbeater: Any = None

    def __call__(self, progress: Progress | None = None) -> Any:
        if self._run is None:
            self._run = self._build()
        # the heartbeat comes first: it says this worker's share and generation for the pass
        beats = self.heartbeater()
        beats.beat()
        with beats.during():
            return self._run(progress)

    def heartbeater(self):
        if self._heartbeater is None:
            from aso.components.passes import Heartbeater

            self._heartbeater = Heartbeater(self.backend(), self.name, self.config.aso.heartbeat_timeout)
        return self._heartbeater

    def close(self) -> None:
        while self._owned:
            self._owned.pop().close()

    def __enter__(self) -> ComponentPass:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    # -- the parts, opened when first needed -------------------------------------------

    def backend(self):
        if self._backend is None:
            from aso.state import backend_from_config

            self._backend = backend_from_config(self.config)
            self._owned.append(self._backend)
        return self._backend

    def catalog(self):
        if self._catalog is None:
            from aso.catalogs import catalog_from_config

            self._catalog = catalog_from_config(self.config)
            self._owned.append(self._catalog)
        return self._catalog

    def proxies(self):
        if self._proxies is None:
            from aso.credentials import proxy_source_from_config

            self._proxies = proxy_source_from_config(self.config)
        return self._proxies

    def tools(self):
        if self._tools is None:
            from aso.transfertools import tool_factory_from_config

            self._tools = tool_factory_from_config(self.config)
        return self._tools

    def _build(self) -> Callable[[Progress | None], Any]:
        config = self.config
        if self.name == "publisher":
            from aso.components.publisher import PublisherSettings, run_publisher

            publisher = PublisherSettings.from_config(config)
            backend, catalog = self.backend(), self.catalog()
            return lambda progress: run_publisher(backend, catalog, publisher, progress=progress)
        from aso.components.pipeline import PipelineSettings

        settings = PipelineSettings.from_config(config)
        if self.name == "reporter":
            from aso.components.reporter import run_reporter

            backend = self.backend()
            return lambda progress: run_reporter(backend, settings, progress)
        proxies, tools = self.proxies(), self.tools()
        if self.name == "monitor":
            from aso.components.monitor import run_monitor

            backend = self.backend()
            return lambda progress: run_monitor(proxies, tools, settings, progress, backend=backend)
        backend = self.backend()
        if self.name in ("transfer", "stager"):
            from aso.components.transfer import run_stager, run_transfer

            topologies = TopologySource(config)
            run = run_transfer if self.name == "transfer" else run_stager

            def transfer_pass(progress):
                return run(backend, proxies, tools, topologies(), settings, progress)

            return transfer_pass
        from aso.components.retry_manager import run_retry_manager

        return lambda progress: run_retry_manager(backend, proxies, tools, settings)


class TopologySource:
    """The topology of each transfer pass (links, paths and throttling limits; a fresh route
    cache each pass): the configuration's, re-read from its file when the file changed since,
    so that a changed link or limit takes effect at the next pass of a looping
    ``aso transfer`` too. A file that no longer loads keeps the topology in force (and says
    so) rather than stopping the loop."""

    def __init__(self, config: Any):
        self.config = config
        self.path = config.path
        self.stamp = self._stamp()

    def _stamp(self) -> Any:
        try:
            return self.path.stat().st_mtime_ns if self.path else None
        except OSError:
            return None

    def __call__(self) -> Any:
        from aso.config import load_config
        from aso.errors import ConfigError

        stamp = self._stamp()
        if stamp is not None and stamp != self.stamp:
            self.stamp = stamp
            try:
                config = load_config(self.path)
                config.topology()  # a topology that cannot be built is not taken either
                self.config = config
            except ConfigError as exc:
                log.warning("links and limits not re-read: %s; keeping the previous ones", exc)
        return self.config.topology()


def build_pass(name: str, config: Any, backend: Any = None, *, catalog: Any = None, proxies: Any = None,
               tools: Any = None) -> ComponentPass:
    """The pass of component ``name`` (``transfer``, ``stager``, ``monitor``, ``reporter``,
    ``publisher``, ``retry-manager``) as ``config`` describes it; the backend, catalog,
    proxy source and tool factory may be given (the demo shares one backend and catalog),
    else they come from the configuration."""
    return ComponentPass(name, config, backend, catalog=catalog, proxies=proxies, tools=tools)
