"""Which backend a URL or a configuration gets: REST for http(s)://, the store otherwise.

The implementations are imported when asked for, so importing :mod:`aso.state` stays cheap
(no database driver, no HTTP client) for commands that need neither.
"""

from __future__ import annotations

from typing import Any

from aso.state.backend import StateBackend


def open_backend(
    url: str, *, worker: str, token: str = "", instance: str = "prod", store_options: dict | None = None, **options: Any
) -> StateBackend:
    """The backend for ``url``: REST for http(s)://, the in-process store otherwise.

    ``options`` configure the REST client; ``store_options`` the in-process store (its
    retry defaults: over REST the server's configuration decides them)."""
    if url.startswith(("http://", "https://")):
        from aso.state.rest_client import RestBackend

        return RestBackend(url, worker=worker, token=token, instance=instance, **options)
    from aso.state.local import LocalBackend

    return LocalBackend(url, worker=worker, **(store_options or {}))


def backend_from_config(config) -> StateBackend:
    """The backend a component should use, from the [state] and [aso] sections."""
    return open_backend(
        config.state.url,
        worker=config.aso.worker,
        token=config.state.token,
        instance=config.aso.instance,
        timeout=config.state.timeout,
        retries=config.state.retries,
        backoff=config.state.backoff,
        ca_bundle=config.state.ca_bundle,
        store_options={"max_retry": config.transfer.max_retry, "publication_max_retry": config.publisher.max_retry},
    )
