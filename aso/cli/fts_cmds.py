"""``aso fts-server``: the embedded FTS3-compatible transfer service."""

from __future__ import annotations

import click

from aso.cli.common import EXIT_BAD_INPUT, fail, pass_app


def _default(app, name: str):
    # Without a configuration file this is the option's own default; a broken file is an
    # error (exit 2), never silently replaced by the defaults.
    return getattr(app.config.fts_server, name)


def _folders(app, given: tuple[str, ...], flag: str, option: str, tape: bool) -> tuple[tuple[str, ...], str]:
    """Local folders and where they came from: the ``flag`` options, else the configured
    ``fts_server.<option>``, else the folders of the file:// prefixes of [sites] (of the tape
    sites only with ``tape``), else none. Used for the roots file:// URLs may use and for
    the roots whose files are on tape."""
    import os

    from aso.ftsd.urls import normalise_roots, roots_from_site_prefixes

    if given:
        return normalise_roots(given), flag
    try:
        config = app.config
    except Exception:  # no usable configuration file: nothing configured
        return (), "none"
    configured = getattr(config.fts_server, option, []) or []
    if configured:
        paths = [os.path.expanduser(str(r)) for r in configured]
        return (normalise_roots(p if os.path.isabs(p) else os.path.join(config.base_dir, p) for p in paths),
                f"fts_server.{option}")
    from_sites = roots_from_site_prefixes(site.prefix for site in config.sites.values() if site.tape or not tape)
    if from_sites:
        return from_sites, "the file:// prefixes of the tape sites in [sites]" if tape else "the file:// prefixes of [sites]"
    return (), "none"


def _message_settings(app, brokers: tuple[str, ...], served_url: str):
    """The messaging settings from --stomp-broker and [fts_server] (None: no broker)."""
    from aso.ftsd.outbox import MessageSettings
    from aso.messaging.stomp_link import parse_broker

    brokers = tuple(brokers) or tuple(_default(app, "stomp_brokers") or ())
    if not brokers:
        return None
    for spec in brokers:
        try:
            parse_broker(str(spec))
        except ValueError as exc:
            fail(f"--stomp-broker / fts_server.stomp_brokers: {exc}", EXIT_BAD_INPUT)
    return MessageSettings(
        brokers=tuple(str(b) for b in brokers),
        user=_default(app, "stomp_user"),
        password=_default(app, "stomp_password"),
        complete_topic=_default(app, "stomp_complete_topic"),
        state_topic=_default(app, "stomp_state_topic"),
        use_topics=bool(_default(app, "stomp_use_topics")),
        vo=_default(app, "vo"),
        endpoint=_default(app, "alias") or served_url,
    )


@click.command("fts-server")
@click.option("--host", default=None, help="Address to listen on [fts_server.host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port to listen on [fts_server.port, 8446].")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="SQLite database of jobs, files and delegated credentials [fts_server.db].")
@click.option("--cert", type=click.Path(dir_okay=False), default=None,
              help="Host certificate (PEM). With --key and --ca-dir the service speaks HTTPS and "
                   "authenticates clients by X.509 certificate or RFC 3820 proxy.")
@click.option("--key", type=click.Path(dir_okay=False), default=None, help="Host private key (PEM).")
@click.option("--ca-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of trusted CA certificates (<hash>.0 files, as /etc/grid-security/certificates).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Copies running at once over the whole service [fts_server.workers; 0 there: 4 per CPU core, 4 to 32].")
@click.option("--per-link", type=click.IntRange(min=1), default=None,
              help="Copies running at once per link, source storage to destination storage [fts_server.per_link; "
                   "0 there: as many as workers].")
@click.option("--local-user-dn", default=None,
              help="Plain HTTP only: the DN every caller is taken to be [/DC=local/CN=aso local user].")
@click.option("--default-retry", type=int, default=0, show_default=True,
              help="Retries for jobs submitted with retry 0 (FTS3's 'server default').")
@click.option("--checkpoint-seconds", type=float, default=1.0, show_default=True,
              help="Record copy progress at most this often (and every 256 MiB).")
@click.option("--poll-seconds", type=float, default=1.0, show_default=True,
              help="How often the scheduler looks for retries that are due and jobs past max_time_in_queue.")
@click.option("--fsync/--no-fsync", "durable", default=True, show_default=True,
              help="fsync local destination files at checkpoints and before reporting them FINISHED. "
                   "--no-fsync is faster and survives a killed service, but not a power cut.")
@click.option("--reread-destination", is_flag=True,
              help="Read each local destination file back to compute its checksum (the disk itself checked); "
                   "by default it is computed from the bytes as they are written, in the same pass as the source's.")
@click.option("--simulate", is_flag=True,
              help="Move no data: every submitted file is FINISHED at once with its declared size. "
                   "For measuring what surrounds FTS (aso's pipeline benchmark); never for real transfers.")
@click.option("--threads", type=int, default=16, show_default=True, help="HTTP server threads.")
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False),
              help="A local folder file:// URLs (sources and destinations) may lie under; repeatable. "
                   "Default: fts_server.roots, else the folders of the file:// site prefixes in [sites]. "
                   "With none, every file:// URL is refused.")
@click.option("--multihop-cleanup-delay", type=click.IntRange(min=0), default=None,
              help="Seconds the intermediate copies of a failed or canceled multihop job are kept before they are "
                   "deleted [fts_server.multihop_cleanup_delay, 7200].")
@click.option("--tape-root", "tape_roots", multiple=True, type=click.Path(file_okay=False),
              help="A local folder whose files are on (emulated) tape: nearline until a bring-online job stages "
                   "them; repeatable. Default: fts_server.tape_roots, else the folders of the file:// prefixes of "
                   "the tape sites in [sites].")
@click.option("--staging-delay", nargs=2, type=click.FloatRange(min=0), default=None, metavar="MIN MAX",
              help="Seconds the emulated tape robot takes per recall, drawn per file from [MIN, MAX] "
                   "[fts_server.staging_delay_min, staging_delay_max: 0 5].")
@click.option("--stomp-broker", "stomp_brokers", multiple=True,
              help="A STOMP broker (host:port) to publish FTS3's monitoring messages to; repeatable "
                   "[fts_server.stomp_brokers]. User, password, topics, vo and alias come from [fts_server].")
@pass_app
def fts_server(app, host, port, db_path, cert, key, ca_dir, workers, per_link, local_user_dn, default_retry,
               checkpoint_seconds, poll_seconds, durable, reread_destination, simulate, threads, roots,
               multihop_cleanup_delay, tape_roots, staging_delay, stomp_brokers) -> None:
    """Serve FTS3's REST API and copy files (file://, http://, https://, root://).

    file:// URLs must lie under one of the service's roots (--root), as written and with
    symbolic links resolved; any other file:// URL is refused at submission with 400.

    With STOMP brokers (--stomp-broker or fts_server.stomp_brokers) it publishes FTS3's
    completion and state messages; they wait in the database while no broker answers.

    Jobs, files, progress and delegated credentials live in the SQLite database; a service
    killed at any moment and started again forgets no job and resumes partial copies from
    their last checkpoint. Stop it with SIGTERM or Ctrl-C.

    Exit codes: 0 stopped cleanly, 2 bad option or configuration (missing certificate, key
    or CA folder, port already in use).
    """
    import logging
    from pathlib import Path

    from cheroot import wsgi

    from aso.cli.serving import serve_until_stopped
    from aso.ftsd.executor import ExecutorSettings
    from aso.ftsd.service import DEFAULT_LOCAL_USER, FtsService, ServiceSettings
    from aso.ftsd.staging import TapeSettings
    from aso.ftsd.tls import accept_double_slashes, make_https_server
    from aso.logs import set_component

    set_component("fts-server")
    log = logging.getLogger("aso.fts")
    host = host or _default(app, "host")
    port = port if port is not None else int(_default(app, "port"))
    db_path = db_path or _default(app, "db")
    cert = cert or _default(app, "cert") or None
    key = key or _default(app, "key") or None
    ca_dir = ca_dir or _default(app, "ca_dir") or None
    from aso.ftsd.service import copy_slots

    workers, per_link = copy_slots(workers or int(_default(app, "workers")), per_link or int(_default(app, "per_link")))
    tls = [cert, key, ca_dir]
    if any(tls) and not all(tls):
        fail("HTTPS needs all of --cert, --key and --ca-dir", EXIT_BAD_INPUT)
    if all(tls) and local_user_dn:
        fail("--local-user-dn is for plain HTTP; over HTTPS the user is the client certificate's DN", EXIT_BAD_INPUT)
    https = all(tls)
    roots, roots_from = _folders(app, roots, "--root", "roots", tape=False)
    tape_roots, tape_from = _folders(app, tape_roots, "--tape-root", "tape_roots", tape=True)
    delay_min, delay_max = staging_delay or (float(_default(app, "staging_delay_min")),
                                             float(_default(app, "staging_delay_max")))
    if delay_max < delay_min:
        fail(f"--staging-delay / fts_server.staging_delay_max: {delay_max:g} is less than the minimum {delay_min:g}",
             EXIT_BAD_INPUT)
    messages = _message_settings(app, stomp_brokers, f"{'https' if https else 'http'}://{host}:{port}")
    settings = ServiceSettings(
        roots=roots,
        db=Path(db_path),
        workers=workers,
        per_link=per_link,
        local_user_dn=None if https else (local_user_dn or DEFAULT_LOCAL_USER),
        executor=ExecutorSettings(default_retry=default_retry, checkpoint_seconds=checkpoint_seconds,
                                  poll_seconds=poll_seconds, durable=durable, simulate=simulate,
                                  reread_destination=reread_destination),
        messages=messages,
        multihop_cleanup_delay=float(multihop_cleanup_delay if multihop_cleanup_delay is not None
                                     else _default(app, "multihop_cleanup_delay")),
        metrics_token=_default(app, "metrics_token"),
        metrics_cache_seconds=float(app.config.metrics.cache_seconds),
        tape=TapeSettings(tape_roots, delay_min, delay_max),
    )
    if https:
        try:
            # Check the files before opening the database, so a typo changes nothing.
            for what, path in (("--cert", cert), ("--key", key)):
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{what} {path}: no such file")
            if not Path(ca_dir).is_dir():
                raise FileNotFoundError(f"--ca-dir {ca_dir}: no such directory")
        except FileNotFoundError as exc:
            fail(str(exc), EXIT_BAD_INPUT)
    service = FtsService(settings)
    wsgi_app = service.app()
    if https:
        try:
            httpd = make_https_server(wsgi_app, host, port, cert=cert, key=key, ca_dir=ca_dir, threads=threads)
        except Exception as exc:  # unreadable certificate or key, key not matching
            fail(f"cannot serve HTTPS: {exc}", EXIT_BAD_INPUT)
    else:
        httpd = wsgi.Server((host, port), wsgi_app, numthreads=threads)
        accept_double_slashes(httpd)
    httpd.shutdown_timeout = 2
    try:
        httpd.prepare()  # bind before starting the copy service: a port in use is a one-line error
    except OSError as exc:
        fail(f"aso fts-server cannot listen on {host}:{port}: {exc}", EXIT_BAD_INPUT)
    if https:
        log.info("aso fts-server on https://%s:%d (clients authenticated against %s), database %s", host, port, ca_dir, db_path)
    else:
        log.warning("aso fts-server on http://%s:%d WITHOUT authentication: every caller is %s (single local user); "
                    "give --cert, --key and --ca-dir for HTTPS", host, port, settings.local_user_dn)

    if settings.roots:  # (the tape roots are among them: FtsService adds them)
        log.info("file:// roots (from %s): %s", roots_from, ", ".join(settings.roots))
    else:
        log.warning("no local roots: every file:// URL is refused; start the service with --root DIR to allow them")
    if tape_roots:
        log.info("tape roots (from %s): %s", tape_from, ", ".join(tape_roots))
    if simulate:
        log.warning("SIMULATION: no file is copied; every submitted file is reported FINISHED")
    service.start()
    try:
        serve_until_stopped(httpd)
    finally:
        service.stop()
        log.info("aso fts-server stopped")
