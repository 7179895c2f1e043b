"""``aso receiver``: the long-running component that turns FTS3's completion messages into
reporter hand-offs (:mod:`aso.components.receiver`)."""

from __future__ import annotations

import click

from aso.cli.common import EXIT_BAD_INPUT, echo_json, fail, pass_app


@click.command()
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: run until SIGTERM or Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON when it stops.")
@pass_app
def receiver(app, seconds: float | None, as_json: bool) -> None:
    """Receive FTS's completion messages from the [receiver] brokers and hand each finished
    file to the reporter within moments of FTS finishing it.

    Keeps only this installation's messages (issuer ASO, [aso] instance, [receiver] vo).
    With a receiver configured, `aso monitor` polls only jobs quiet for [monitor]
    poll_after seconds: it is the safety net for whatever the messages miss. Brokers that
    go away are reconnected with a back-off. Stop it with SIGTERM or Ctrl-C (the batch at
    hand is finished first). One receiver runs at a time (the 'receiver' lock).

    Exit codes: 0 stopped (also when another receiver holds the lock), 2 no brokers
    configured or a bad broker address.
    """
    import signal
    import threading

    from aso.components.pipeline import PipelineSettings
    from aso.components.receiver import Receiver, ReceiverSettings
    from aso.locking import LockHeld, component_lock
    from aso.messaging.stomp_link import parse_broker

    config = app.config
    settings = ReceiverSettings.from_config(config)
    if not settings.brokers:
        fail("receiver.brokers is empty: configure the STOMP brokers FTS publishes to", EXIT_BAD_INPUT)
    for spec in settings.brokers:
        try:
            parse_broker(spec)
        except ValueError as exc:
            fail(f"receiver.brokers: {exc}", EXIT_BAD_INPUT)
    if settings.subscription:
        from aso.messaging.durable import subscription_headers

        try:
            subscription_headers(None, settings.subscription)
        except ValueError as exc:
            fail(f"receiver.subscription: {exc}", EXIT_BAD_INPUT)
    from aso.logs import set_pass

    pass_id = set_pass("receiver") or ""  # the receiver's one long run is its pass
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    import time

    from aso.cli.common import as_cli_error
    from aso.cli.component_cmds import pass_exit
    from aso.components.passes import reporter_for
    from aso.metrics.passes import PassMetrics

    recorder = reporter_for(config, "receiver")
    metrics = PassMetrics("receiver", config.metrics.textfile_dir) if config.metrics.textfile_dir else None
    try:
        with component_lock(config.aso.lock_dir, "receiver"):
            # a receiver runs until stopped: its run is its one pass
            recorder.started(pass_id)
            summary, began, code = None, time.monotonic(), 0
            try:
                summary = Receiver(settings, PipelineSettings.from_config(config)).run(stop, seconds)
                code = pass_exit("receiver", summary)[0]  # the rule the other components' records use
            except Exception as exc:
                code = as_cli_error(exc).exit_code
                raise
            finally:
                recorder.ended(summary, code)
                if metrics is not None:
                    files = summary.files_handled() if summary is not None else 0
                    metrics.record(time.monotonic() - began, files, len(summary.errors) if summary else 1, code)
    except LockHeld as exc:
        click.echo(f"{exc}", err=True)
        return
    finally:
        recorder.close()
    if as_json:
        echo_json(summary.as_dict())
