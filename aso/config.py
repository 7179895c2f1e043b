"""Configuration: one TOML file, a section per component, every option with a default.

Options are declared once in :data:`OPTIONS`; loading, validation, ``aso init`` and
``docs/configuration.md`` all come from that table, so none of them can drift.
Relative paths in the file are resolved against the file's own folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aso.errors import ConfigError

CONFIG_ENV = "ASO_CONFIG"
DEFAULT_FILE = "aso.toml"

PERMANENT_ERROR_PATTERNS = [
    "canceled because it stayed in the queue for too long",
    "permission denied",
    "disk quota exceeded",
    "operation not permitted",
    "mkdir\\(\\) fail",
    "open/create error",
    "mkdir: cannot create directory",
    "does not have enough space",
]


@dataclass(frozen=True)
class Option:
    section: str
    name: str
    default: Any
    help: str
    kind: str = ""  # "path" (resolved against the config folder), "url", or "" (by default type)
    #: bounds of a number, checked when the file is loaded (inclusive; None = unbounded)
    minimum: int | float | None = None
    maximum: int | float | None = None
    #: a number that must be strictly above this (timeouts)
    above: float | None = None
    #: the only values allowed (strings compare case-insensitively when ``any_case``)
    choices: tuple[str, ...] = ()
    any_case: bool = False
    #: URL schemes allowed (the part before ``+driver``); '' stays allowed for optional URLs
    schemes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def constraint(self) -> str:
        """What the loader checks beyond the type, in words ('' when nothing)."""
        if self.choices:
            return "One of: " + ", ".join(c or "''" for c in self.choices) + (" (any case)." if self.any_case else ".")
        if self.schemes:
            return "URL schemes: " + ", ".join(f"{s}://" for s in self.schemes) + "."
        if self.minimum is not None and self.maximum is not None:
            return f"From {self.minimum} to {self.maximum}."
        if self.minimum is not None:
            return f"At least {self.minimum}."
        if self.above is not None:
            return f"More than {self.above:g}."
        return ""

    def describe(self) -> str:
        """The help text with its constraint: what ``aso init`` and the docs print."""
        return f"{self.help} {self.constraint()}".strip()


def _o(section: str, name: str, default: Any, help: str, kind: str = "", **checks: Any) -> Option:
    return Option(section, name, default, help, kind, **checks)


_PORT = {"minimum": 1, "maximum": 65535}
_POSITIVE = {"minimum": 1}
_NON_NEGATIVE = {"minimum": 0}


OPTIONS: list[Option] = [
    # general
    _o("aso", "worker", "asoworker", "This installation's worker name (CRAB's asoworker): rows it acquires carry it."),
    _o("aso", "instance", "prod", "CRAB REST instance name, the <instance> in /crabserver/<instance>/filetransfers."),
    _o("aso", "log_level", "INFO", "Log level of every component.", choices=("DEBUG", "INFO", "WARNING", "ERROR"), any_case=True),
    _o("aso", "log_format", "text", "Log lines: 'text' (one readable line per event) or 'json' (one object per line with ts, level, logger, message, component, pass_id, user, task, fts_job).", choices=("text", "json")),
    _o("aso", "lock_dir", "locks", "Folder of the per-component lock files.", "path"),
    _o("aso", "heartbeat_timeout", 600, "Seconds after which a component instance that has not heartbeat is dead; a worker all of whose instances are dead has its work taken over by the live workers (see docs/hosts.md). Longer than the longest pass's gap between heartbeats (a quarter of this).", minimum=1, maximum=7 * 86400),
    # state backend
    _o("state", "url", "sqlite:///state.db", "State backend: a database URL (sqlite:///PATH, postgresql+psycopg://...) for the local backend, or http(s)://host:port for an aso server.", "url", schemes=("sqlite", "postgresql", "http", "https")),
    _o("state", "token", "", "Bearer token sent to the aso server (REST backend only)."),
    _o("state", "timeout", 60.0, "Seconds before a REST request to the state server gives up.", above=0),
    _o("state", "retries", 5, "Attempts for a REST request that meets a connection error or a 5xx answer.", **_POSITIVE),
    _o("state", "backoff", 0.5, "First back-off in seconds between REST retries; it doubles each time.", **_NON_NEGATIVE),
    _o("state", "ca_bundle", "", "CA bundle to verify an https state server ('' = system default).", "path"),
    # REST server
    _o("server", "host", "127.0.0.1", "Address aso server listens on."),
    _o("server", "port", 8080, "Port aso server listens on.", **_PORT),
    _o("server", "db_url", "", "Database the server serves ('' = state.url when that is a database URL).", "url", schemes=("sqlite", "postgresql")),
    _o("server", "threads", 8, "Worker threads of the built-in WSGI server.", **_POSITIVE),
    _o("server", "max_body_bytes", 16 * 1024 * 1024, "Largest request body accepted; larger ones get 413.", **_POSITIVE),
    _o("server", "max_batch", 10000, "Largest number of rows one REST call may carry.", **_POSITIVE),
    _o("server", "tokens", [], "List of {token, identity, role} tables; role is service, operator or user."),
    _o("server", "source_areas", ["/store/temp/user/{username}"], "LFN areas a user token may inject sources from; an LFN is inside when the area is followed by '.' or '/' ({username} is the caller)."),
    _o("server", "destination_areas", ["/store/user/{username}/", "/store/group/{group}/"], "LFN prefixes a user token may inject destinations under ({username} is the caller; {group} each of the caller's groups)."),
    _o("server", "groups", {}, "Map of user name to the list of groups that user belongs to (for {group} in destination_areas)."),
    _o("server", "operator_inject", False, "Let operator tokens inject transfers on behalf of users (the service role always may)."),
    _o("server", "metrics_token", "", "Bearer token /metrics requires ('' = /metrics is open, as Prometheus scrapes by default; the API's tokens do not open it)."),
    _o("server", "web_secret", "", "Key that signs the status page's session cookies ('' = a random one at each start: sessions end with a restart, and several gunicorn workers, which must share it, need it set). Keep it secret; at least 32 characters."),
    # status page (aso web; aso server serves the same page at its root)
    _o("web", "host", "127.0.0.1", "Address aso web listens on (without [server] tokens it only serves loopback addresses)."),
    _o("web", "port", 8090, "Port aso web listens on.", **_PORT),
    _o("web", "behind_proxy", False, "The status page is behind one reverse proxy (TLS front end) whose X-Forwarded-Proto/-For/-Host headers are trusted: session cookies are then Secure when the proxy was reached over HTTPS. Applies to aso server and aso web."),
    _o("web", "session_hours", 12, "Hours a status-page login lasts.", minimum=1, maximum=24 * 30),
    # sandboxes
    _o("sandbox", "root", "sandboxes", "Root of the on-disk hand-offs (monitor/, reporter/, submit/).", "path"),
    # FTS client side
    _o("fts", "delegation_lifetime", 48 * 3600, "Lifetime in seconds of a proxy delegated to FTS.", **_POSITIVE),
    _o("fts", "delegation_renew_below", 24 * 3600, "Re-delegate when less than this many seconds are left.", **_NON_NEGATIVE),
    _o("fts", "bulk_size", 100, "Job ids per bulk status request.", **_POSITIVE),
    _o("fts", "timeout", 30.0, "Seconds before an FTS request gives up.", above=0),
    _o("fts", "ca_dir", "", "Folder of CA certificates to verify FTS servers ('' = X509_CERT_DIR or the system default).", "path"),
    _o("fts", "verify_checksum", "both", "FTS checksum mode.", choices=("both", "source", "target", "none")),
    _o("fts", "overwrite", True, "Let FTS overwrite an existing destination file."),
    _o("fts", "retry", 3, "FTS-side retries per file (-1: never retry, as FTS3 reads it; 0: the FTS server's default).", minimum=-1),
    _o("fts", "retry_delay", 600, "Seconds FTS waits between its own retries.", **_NON_NEGATIVE),
    _o("fts", "max_time_in_queue", 10, "Hours an FTS job may stay queued before FTS cancels it.", **_NON_NEGATIVE),
    _o("fts", "priority", 3, "FTS job priority (1 to 5).", minimum=1, maximum=5),
    # credentials
    _o("credentials", "source", "directory", "Where user proxies come from.", choices=("directory", "myproxy")),
    _o("credentials", "directory", "proxies", "directory source: folder holding one proxy file per user, named <user>.pem.", "path"),
    _o("credentials", "cache_dir", "proxy-cache", "Where retrieved proxies are cached (mode 0600).", "path"),
    _o("credentials", "min_time_left", 3600, "A proxy with less than this many seconds left is not used.", **_NON_NEGATIVE),
    _o("credentials", "myproxy_server", "localhost", "myproxy source: MyProxy host."),
    _o("credentials", "myproxy_port", 7512, "myproxy source: MyProxy port.", **_PORT),
    _o("credentials", "myproxy_lifetime", 168 * 3600, "myproxy source: lifetime in seconds asked of MyProxy.", **_POSITIVE),
    _o("credentials", "myproxy_account", "", "myproxy source: host of the CRAB REST server, used in CRAB's credential name (sha1(dn + '_' + account))."),
    _o("credentials", "service_cert", "", "myproxy source: service certificate (a trusted retriever).", "path"),
    _o("credentials", "service_key", "", "myproxy source: service key.", "path"),
    _o("credentials", "ca_dir", "", "myproxy source: CA folder to verify the MyProxy server.", "path"),
    _o("credentials", "user_dns", {}, "myproxy source: map of user name to certificate DN."),
    # components
    _o("transfer", "max_files_per_job", 50, "Files per FTS job (one job per link chunk).", **_POSITIVE),
    _o("transfer", "acquire_limit", 10000, "Rows acquired per user per pass.", **_POSITIVE),
    _o("transfer", "threads", 8, "Users handled at once.", **_POSITIVE),
    _o("transfer", "max_retry", 3, "Submission attempts before a row is FAILED instead of RETRY.", **_NON_NEGATIVE),
    _o("monitor", "threads", 4, "Bulk status requests in flight at once.", **_POSITIVE),
    _o("monitor", "job_timeout", 72000, "Seconds after submission before a job still unfinished is abandoned.", **_POSITIVE),
    _o("monitor", "file_timeout", 18000, "Seconds without any change before a job is abandoned (not while FTS stages its files from tape: [staging] bring_online bounds that).", **_POSITIVE),
    _o("monitor", "poll_after", 300, "With a receiver ([receiver] brokers), poll only jobs FTS has said nothing about for this many seconds (Rucio's poller threshold): the messages report the rest.", **_NON_NEGATIVE),
    _o("receiver", "brokers", [], "STOMP brokers FTS publishes its completion messages to (host:port; an alias stands for all its addresses, one connection each). [] = no receiver: the monitor polls every job."),
    _o("receiver", "user", "", "User name on the brokers."),
    _o("receiver", "password", "", "Password on the brokers."),
    _o("receiver", "vhost", "/", "STOMP host header (RabbitMQ's virtual host; ActiveMQ ignores it)."),
    _o("receiver", "topic", "transfer.fts_monitoring_complete", "FTS3's completion topic (or queue) name."),
    _o("receiver", "use_topics", True, "Subscribe to /topic/NAME (FTS3's default), else /queue/NAME."),
    _o("receiver", "vo", "", "Keep only messages of this VO ('' = any VO; the issuer and instance are always checked)."),
    _o("receiver", "subscription", "", "Name of a durable subscription: the broker keeps messages while the receiver is away ('' = none, as Rucio: the monitor's poll covers the gap)."),
    _o("receiver", "batch_size", 1000, "Most messages handed over in one batch (one reporter entry per user per batch).", minimum=1, maximum=100000),
    _o("receiver", "batch_seconds", 0.2, "Longest wait to fill a batch.", above=0),
    _o("receiver", "early_seconds", 120, "How long a message for a job without a monitor entry yet (FTS faster than aso transfer writing it) is kept and tried again.", **_NON_NEGATIVE),
    _o("reporter", "threads", 8, "Users handled at once.", **_POSITIVE),
    _o("reporter", "permanent_errors", PERMANENT_ERROR_PATTERNS, "Regular expressions (case-insensitive): a failure reason matching one fails the file at once."),
    _o("reporter", "reason_length", 1000, "Failure reasons are cut to this many characters.", **_POSITIVE),
    _o("retry_manager", "cooloff", 7200, "Seconds a RETRY row waits before going back to NEW.", **_NON_NEGATIVE),
    _o("retry_manager", "stuck_after", 3600, "Seconds after which an ACQUIRED or SUBMITTED row without a sandbox entry is recovered.", **_NON_NEGATIVE),
    _o("publisher", "max_files_per_block", 100, "Files per published block.", **_POSITIVE),
    _o("publisher", "block_closure_timeout", 9400, "Seconds since a task's last publication after which a partial block is published.", **_NON_NEGATIVE),
    _o("publisher", "expiration", 3 * 86400, "Seconds after which waiting files are published, or failed, whatever happens.", **_NON_NEGATIVE),
    _o("publisher", "threads", 5, "Users handled at once.", **_POSITIVE),
    _o("publisher", "max_retry", 3, "Publication attempts before a file is FAILED.", **_NON_NEGATIVE),
    _o("publisher", "catalog", "local", "Catalog plug-in.", choices=("local", "dbs")),
    _o("publisher", "catalog_url", "sqlite:///catalog.db", "local: database URL of the catalog; dbs: the DBS writer URL.", "url", schemes=("sqlite", "postgresql", "http", "https")),
    # embedded FTS service
    _o("fts_server", "host", "127.0.0.1", "Address aso fts-server listens on."),
    _o("fts_server", "port", 8446, "Port aso fts-server listens on.", **_PORT),
    _o("fts_server", "db", "fts.db", "SQLite database of the embedded FTS service.", "path"),
    _o("fts_server", "cert", "", "Host certificate; with key and ca_dir the service speaks HTTPS.", "path"),
    _o("fts_server", "key", "", "Host key.", "path"),
    _o("fts_server", "ca_dir", "", "Folder of trusted CA certificates for client authentication.", "path"),
    _o("fts_server", "workers", 0, "Copies running at once (0 = fit the machine: 4 per CPU core, from 4 to 32).", **_NON_NEGATIVE),
    _o("fts_server", "per_link", 0, "Copies running at once per source host -> destination host (0 = as many as workers: a local disk is one link).", **_NON_NEGATIVE),
    _o("fts_server", "stomp_brokers", [], "STOMP brokers (host:port; an alias stands for all its addresses) that FTS3's monitoring messages go to ([] = none are sent)."),
    _o("fts_server", "stomp_user", "", "User name on the STOMP brokers."),
    _o("fts_server", "stomp_password", "", "Password on the STOMP brokers."),
    _o("fts_server", "stomp_complete_topic", "transfer.fts_monitoring_complete", "Where completion messages go (one per ended transfer attempt)."),
    _o("fts_server", "stomp_state_topic", "transfer.fts_monitoring_state", "Where state-change messages go ('' = none are sent)."),
    _o("fts_server", "stomp_use_topics", True, "Publish to topics (/topic/NAME), as FTS3 does by default, or else to queues (/queue/NAME)."),
    _o("fts_server", "vo", "", "The VO the messages name ('' = each job's VO, which without VOMS attributes is the user's delegation id)."),
    _o("fts_server", "alias", "", "The service URL the messages name (endpnt; '' = http(s)://host:port as served)."),
    _o("fts_server", "metrics_token", "", "Bearer token /metrics requires ('' = /metrics is open, with or without a client certificate)."),
    _o("fts_server", "multihop_cleanup_delay", 7200, "Seconds the intermediate copies of a failed or canceled multihop job are kept (a resubmitted job may reuse them) before they are deleted; after a job's last hop they go at once (Rucio's multihop tombstone is 2 h).", **_NON_NEGATIVE),
    # Prometheus metrics (docs/operations.md, "Metrics")
    _o("metrics", "textfile_dir", "", "Folder where each component pass writes aso_<component>.prom for node-exporter's textfile collector ('' = none written).", "path"),
    _o("metrics", "cache_seconds", 10.0, "Seconds aso server and aso fts-server reuse the row counts behind their /metrics gauges before counting again.", minimum=0),
    # finished rows out of the live table (aso archive; docs/operations.md, "Archiving finished rows")
    _o("archive", "older_than_days", 30, "aso archive takes finished rows (transfer FAILED or KILLED, or DONE with publication DONE, FAILED or NOT_REQUIRED) that ended and last changed more than this many days ago.", minimum=0),
    _o("archive", "batch_size", 10000, "Rows aso archive moves or deletes per transaction (a kill loses at most the batch under way, which the next run takes again).", minimum=1, maximum=1000000),
    # topology: links, paths and throttling
    _o("topology", "default_distance", 1, "Distance of a site pair that no [[links]] entry names (0 = no such link: only the configured links exist). With the default every pair of sites is one direct link of distance 1, as before links existed.", **_NON_NEGATIVE),
    _o("topology", "hop_penalty", 10, "Cost added for every intermediate site of a multi-hop path (Rucio's default; a site's own hop_penalty wins).", **_NON_NEGATIVE),
    _o("topology", "max_hops", 3, "Most links on a path (1 = direct links only).", minimum=1, maximum=10),
    _o("topology", "scratch", "/store/temp/aso/multihop", "LFN folder, at an intermediate site, that holds the copies a multi-hop path passes through (a site's own scratch wins)."),
    _o("topology", "fair_share", True, "Share a full site or link between the users waiting for it (max-min fair, counting what each has in flight); off: oldest rows first whoever owns them."),
    # Globus transfer tool (docs/globus.md): the links with transfertool = "globus"
    _o("globus", "client_id", "", "Client id of the confidential Globus app aso acts as (client credentials); needed when a link uses Globus."),
    _o("globus", "client_secret_file", "", "File holding that app's client secret (one line; readable by its owner only, mode 0600 or stricter).", "path"),
    _o("globus", "auth_url", "https://auth.globus.org", "Globus Auth base URL (tokens come from <auth_url>/v2/oauth2/token).", "url", schemes=("https", "http")),
    _o("globus", "transfer_url", "https://transfer.api.globus.org/v0.10", "Globus Transfer API URL; a Globus link's endpoint is globus+<this URL>.", "url", schemes=("https", "http")),
    _o("globus", "sync_level", "", "Globus sync_level of a task ('' = copy every file; exists, size, mtime or checksum = skip a file already in place).", choices=("", "exists", "size", "mtime", "checksum")),
    _o("globus", "deadline_hours", 24, "Hours after submission when Globus gives a task up (its deadline; 0 = Globus's default).", **_NON_NEGATIVE),
    _o("globus", "bulk_size", 100, "Task ids per bulk status request (task_list filtered by task_id).", minimum=1, maximum=1000),
    _o("globus", "max_retries", 5, "Retries of a Globus request answered 429, 5xx or not at all.", **_NON_NEGATIVE),
    _o("globus", "backoff", 1.0, "First back-off in seconds between Globus retries; it doubles each time.", **_NON_NEGATIVE),
    _o("globus", "max_backoff", 60.0, "Longest wait between Globus retries, a 429's Retry-After included.", **_NON_NEGATIVE),
    # tape sites (docs/staging.md)
    _o("staging", "bring_online", 43200, "Seconds FTS may take to bring a file from a tape site online (FTS3's bring_online; Rucio's default, 12 h): sent with every job whose source is a tape site, and with every stage-in job.", **_POSITIVE),
    _o("staging", "copy_pin_lifetime", 172800, "Seconds a staged file stays pinned on the tape site's disk buffer for a transfer from tape (FTS3's copy_pin_lifetime; Rucio's submitter default, 48 h; -1 or 0 = not sent, the storage's default).", minimum=-1),
    _o("staging", "stagein_pin_lifetime", -1, "copy_pin_lifetime of a stage-in request's job (aso stager); -1 or 0 = not sent, the storage's default, as Rucio's stager.", minimum=-1),
    _o("fts_server", "roots", [], "Local folders that file:// URLs may read and write ([] = the folders of the file:// site prefixes in [sites]); any other file:// URL is refused."),
    _o("fts_server", "tape_roots", [], "Local folders whose files are on (emulated) tape: nearline until a bring-online job stages them ([] = the folders of the file:// prefixes of the [sites] with tape = true). See docs/tape.md."),
    _o("fts_server", "staging_delay_min", 0.0, "Fewest seconds the emulated tape robot takes to recall a file (each file's delay is drawn from [min, max], the same for the same path on every run).", minimum=0),
    _o("fts_server", "staging_delay_max", 5.0, "Most seconds the emulated tape robot takes to recall a file (at least staging_delay_min).", minimum=0),
]

_BY_KEY = {o.key: o for o in OPTIONS}
SECTIONS = list(dict.fromkeys(o.section for o in OPTIONS))


@dataclass
class Site:
    name: str
    prefix: str
    fts: str
    #: may be an intermediate site of a multi-hop path
    available_for_multihop: bool = False
    #: this site's hop penalty when intermediate (None: [topology] hop_penalty)
    hop_penalty: int | None = None
    #: LFN folder for intermediate copies ('': [topology] scratch)
    scratch: str = ""
    #: most files in flight into / out of this site (0: no limit)
    max_incoming: int = 0
    max_outgoing: int = 0
    #: the site's Globus collection (endpoint) id ('': not served by Globus)
    globus_collection: str = ""
    #: a tape site: transfers from it are staged first (bring_online), stage-in requests
    #: name it; never an intermediate of a multi-hop path
    tape: bool = False

    def pfn(self, lfn: str) -> str:
        """The storage URL of ``lfn`` at this site; never outside the site's prefix."""
        from aso.validate import pfn

        return pfn(self.prefix, lfn)


@dataclass(frozen=True)
class LinkSpec:
    """One ``[[links]]`` entry: an ordered site pair, what it costs and who serves it."""

    source: str
    destination: str
    distance: int = 1
    #: FTS endpoint of the link ('': the destination site's fts)
    fts: str = ""
    transfertool: str = "fts3"
    #: most files in flight on this link (0: no limit)
    max_files: int = 0


@dataclass
class Config:
    values: dict[str, dict[str, Any]]
    sites: dict[str, Site] = field(default_factory=dict)
    path: Path | None = None
    links: list[LinkSpec] = field(default_factory=list)

    def __getattr__(self, section: str) -> SimpleNamespace:
        values = self.__dict__.get("values", {})
        if section in values:
            return SimpleNamespace(**values[section])
        raise AttributeError(section)

    def get(self, key: str) -> Any:
        section, _, name = key.partition(".")
        return self.values[section][name]

    def site(self, name: str) -> Site:
        try:
            return self.sites[name]
        except KeyError:
            raise ConfigError(f"sites.{name}: no such site in the configuration") from None

    def topology(self):
        """Links, paths and limits of this configuration (:class:`aso.topology.Topology`)."""
        from aso.topology import Topology

        return Topology.from_config(self)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def _check_type(option: Option, value: Any) -> Any:
    default = option.default
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, bool):
        raise ConfigError(f"{option.key}: expected an integer, got {value!r}")
    if not isinstance(value, want):
        raise ConfigError(f"{option.key}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    return value


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)


def check_value(option: Option, value: Any) -> Any:
    """``value`` (already of the option's type) against the option's declared constraint;
    the value to keep (a choice in its declared spelling), or ConfigError naming the option."""
    if option.choices and isinstance(value, str):
        fold = (lambda v: v.upper()) if option.any_case else (lambda v: v)
        for choice in option.choices:
            if fold(choice) == fold(value):
                return choice
        raise ConfigError(f"{option.key}: {value!r} is not one of {', '.join(option.choices)}")
    if option.schemes and isinstance(value, str) and value:
        match = _URL.fullmatch(value)
        if match is None:
            raise ConfigError(f"{option.key}: {value!r} is not a URL (expected "
                              + ", ".join(f"{s}://..." for s in option.schemes) + ")")
        scheme = match.group(1).lower().split("+", 1)[0]
        if scheme not in option.schemes:
            raise ConfigError(f"{option.key}: {match.group(1)}:// is not supported (expected "
                              + ", ".join(f"{s}://" for s in option.schemes) + ")")
        if scheme != "sqlite" and not match.group(2).split("/", 1)[0]:
            raise ConfigError(f"{option.key}: {value!r} names no host")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if option.minimum is not None and value < option.minimum:
            raise ConfigError(f"{option.key}: must be at least {option.minimum}, got {value!r}")
        if option.maximum is not None and value > option.maximum:
            raise ConfigError(f"{option.key}: must be at most {option.maximum}, got {value!r}")
        if option.above is not None and not value > option.above:
            raise ConfigError(f"{option.key}: must be more than {option.above:g}, got {value!r}")
    return value


def check_option(key: str, value: Any) -> Any:
    """Type and constraint of one option given outside the file (a command-line override)."""
    option = _BY_KEY.get(key)
    if option is None:
        raise ConfigError(f"{key}: unknown option")
    return check_value(option, _check_type(option, value))


def _resolve(option: Option, value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if option.kind == "path":
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else (base / p))
    if option.kind == "url" and value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        rest = value[len("sqlite:///"):]
        if rest and rest != ":memory:":
            return "sqlite:///" + str(base / rest)
    return value


def from_dict(data: dict[str, Any], base_dir: Path | None = None, path: Path | None = None) -> Config:
    """Build a validated :class:`Config` from parsed TOML; unknown keys are errors."""
    base = base_dir or (path.parent if path else Path.cwd())
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for option in OPTIONS:
        values[option.section][option.name] = _resolve(option, option.default, base)
    sites: dict[str, Site] = {}
    links_body: Any = None
    for section, body in data.items():
        if section == "sites":
            sites.update(_parse_sites(body))
            continue
        if section == "links":
            links_body = body
            continue
        if section not in values:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(SECTIONS + ['sites', 'links'])})")
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a table")
        for name, value in body.items():
            option = _BY_KEY.get(f"{section}.{name}")
            if option is None:
                raise ConfigError(f"{section}.{name}: unknown option")
            values[section][name] = _resolve(option, check_value(option, _check_type(option, value)), base)
    links = _parse_links(links_body, sites) if links_body is not None else []
    if any(link.transfertool == "globus" for link in links):
        for name in ("client_id", "client_secret_file"):
            if not values["globus"][name]:
                first = next(i for i, spec in enumerate(links_body) if spec.get("transfertool") == "globus")
                raise ConfigError(f"links[{first}].transfertool: 'globus' needs [globus] {name}")
    _check_staging(values, sites)
    return Config(values=values, sites=sites, path=path, links=links)


def _check_staging(values: dict[str, dict[str, Any]], sites: dict[str, Site]) -> None:
    """With tape sites, a staging job must be able to outlive its bring-online: the monitor
    abandons any job older than monitor.job_timeout, even one FTS still stages."""
    bring_online, job_timeout = values["staging"]["bring_online"], values["monitor"]["job_timeout"]
    if any(s.tape for s in sites.values()) and bring_online >= job_timeout:
        raise ConfigError(f"staging.bring_online: {bring_online} s must be less than monitor.job_timeout "
                          f"({job_timeout} s), or the monitor abandons jobs FTS is still staging from tape")


_SITE_KEYS = {"prefix": str, "fts": str, "available_for_multihop": bool, "hop_penalty": int, "scratch": str,
              "max_incoming": int, "max_outgoing": int, "globus_collection": str, "tape": bool}
_LINK_KEYS = {"source": str, "destination": str, "distance": int, "fts": str, "transfertool": str,
              "max_files": int, "both_ways": bool}
TRANSFER_TOOLS = ("fts3", "globus")


def _typed(where: str, key: str, value: Any, want: type) -> Any:
    if want is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}.{key}: expected an integer, got {value!r}")
    if not isinstance(value, want):
        raise ConfigError(f"{where}.{key}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    if want is int and value < 0:
        raise ConfigError(f"{where}.{key}: must be at least 0, got {value!r}")
    return value


def _parse_sites(body: Any) -> dict[str, Site]:
    from aso import validate
    from aso.errors import ValidationError

    if not isinstance(body, dict):
        raise ConfigError("sites: expected a table of site tables")
    sites: dict[str, Site] = {}
    for name, spec in body.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("prefix"), str) or not isinstance(spec.get("fts"), str):
            raise ConfigError(f"sites.{name}: needs string keys 'prefix' and 'fts'")
        extra = set(spec) - set(_SITE_KEYS)
        if extra:
            raise ConfigError(f"sites.{name}.{sorted(extra)[0]}: unknown key (known: {', '.join(_SITE_KEYS)})")
        for key, value in spec.items():
            _typed(f"sites.{name}", key, value, _SITE_KEYS[key])
        prefix = spec["prefix"]
        if prefix.startswith("file://") and not prefix.startswith("file:///"):
            raise ConfigError(f"sites.{name}.prefix: file URLs need an absolute path (file:///...)")
        if prefix.startswith("root:"):
            _check_root_prefix(f"sites.{name}.prefix", prefix)
        scratch = spec.get("scratch", "")
        if scratch:
            try:
                validate.lfn(scratch, f"sites.{name}.scratch")
            except ValidationError as exc:
                raise ConfigError(str(exc)) from None
        collection = spec.get("globus_collection", "")
        if collection:
            collection = _collection_id(f"sites.{name}.globus_collection", collection)
        if spec.get("tape", False) and spec.get("available_for_multihop", False):
            # as Rucio: multihop through tape is not allowed (a tape site is only ever a source)
            raise ConfigError(f"sites.{name}.available_for_multihop: a tape site (tape = true) cannot be "
                              "an intermediate site of a multi-hop path")
        sites[name] = Site(name, prefix, spec["fts"], spec.get("available_for_multihop", False),
                           spec.get("hop_penalty"), scratch, spec.get("max_incoming", 0), spec.get("max_outgoing", 0),
                           collection, spec.get("tape", False))
    return sites


def _check_root_prefix(field: str, prefix: str) -> None:
    """A root:// prefix is what the XRootD plug-in will read: root://host[:port]//path,
    no query, no '.'/'..' (the check of aso.ftsd.urls, on the prefix's first file)."""
    from aso.ftsd import urls

    try:
        urls.root_parts(prefix.rstrip("/") + "/x")
    except urls.UrlError as exc:
        raise ConfigError(f"{field}: {prefix!r} {exc} (expected root://host[:port]//path)") from None


def _collection_id(where: str, value: str) -> str:
    """A Globus collection id: a UUID, kept in its canonical spelling."""
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a Globus collection id (a UUID)") from None


def _check_globus_link(where: str, spec: dict[str, Any], sites: dict[str, Site]) -> None:
    """A Globus link joins two sites with collections, and its endpoint is [globus]
    transfer_url (an FTS URL of its own would be ignored, so it is refused)."""
    for key in ("source", "destination"):
        if not sites[spec[key]].globus_collection:
            raise ConfigError(f"{where}.transfertool: 'globus' needs a globus_collection at its {key} "
                              f"site (sites.{spec[key]}.globus_collection)")
    if spec.get("fts"):
        raise ConfigError(f"{where}.fts: a globus link is served by [globus] transfer_url, not {spec['fts']!r}")


def _parse_links(body: Any, sites: dict[str, Site]) -> list[LinkSpec]:
    if not isinstance(body, list):
        raise ConfigError("links: expected an array of tables ([[links]] entries)")
    links: dict[tuple[str, str], LinkSpec] = {}
    for i, spec in enumerate(body):
        where = f"links[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a table")
        extra = set(spec) - set(_LINK_KEYS)
        if extra:
            raise ConfigError(f"{where}.{sorted(extra)[0]}: unknown key (known: {', '.join(_LINK_KEYS)})")
        for key in ("source", "destination"):
            if key not in spec:
                raise ConfigError(f"{where}.{key}: missing")
        for key, value in spec.items():
            _typed(where, key, value, _LINK_KEYS[key])
        source, destination = spec["source"], spec["destination"]
        for key, name in (("source", source), ("destination", destination)):
            if name not in sites:
                raise ConfigError(f"{where}.{key}: {name!r} is not a site of [sites]")
        if source == destination:
            raise ConfigError(f"{where}.destination: a link joins two different sites, not {source!r} to itself")
        if spec.get("distance", 1) < 1:
            raise ConfigError(f"{where}.distance: must be at least 1, got {spec['distance']!r}")
        tool = spec.get("transfertool", "fts3")
        if tool not in TRANSFER_TOOLS:
            raise ConfigError(f"{where}.transfertool: {tool!r} is not one of {', '.join(TRANSFER_TOOLS)}")
        if tool == "globus":
            _check_globus_link(where, spec, sites)
        fields_ = {k: v for k, v in spec.items() if k not in ("source", "destination", "both_ways")}
        pairs = [(source, destination)] + ([(destination, source)] if spec.get("both_ways") else [])
        for a, b in pairs:
            if (a, b) in links:
                raise ConfigError(f"{where}: the link {a} -> {b} is configured twice")
            links[(a, b)] = LinkSpec(a, b, **fields_)
    return list(links.values())


def find_config_path(explicit: str | os.PathLike | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path.cwd() / DEFAULT_FILE
    return local if local.exists() else None


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    """Load ``--config``, else ``$ASO_CONFIG``, else ``./aso.toml``, else the defaults."""
    path = find_config_path(explicit)
    if path is None:
        return from_dict({})
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (TOML files are UTF-8): byte {exc.start} "
                          f"({exc.object[exc.start:exc.start + 1]!r})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, path=path.resolve())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def render_toml(overrides: dict[str, dict[str, Any]], sites: dict[str, dict[str, str]]) -> str:
    """A commented aso.toml: every option with its default, the overrides set."""
    lines = ["# aso configuration. Every option is listed with its default; see docs/configuration.md.", ""]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for option in (o for o in OPTIONS if o.section == section):
            lines.append(f"# {option.describe()}")
            if option.name in overrides.get(section, {}):
                lines.append(f"{option.name} = {_toml_value(overrides[section][option.name])}")
            elif isinstance(option.default, (list, dict)):
                lines.append(f"# {option.name} = {_toml_value(option.default)}")
            else:
                lines.append(f"# {option.name} = {_toml_value(option.default)}")
        lines.append("")
    for name, spec in sites.items():
        lines.append(f"[sites.{name}]")
        lines.append(f"prefix = {_toml_value(spec['prefix'])}")
        lines.append(f"fts = {_toml_value(spec['fts'])}")
        lines.append("")
    lines += TOPOLOGY_EXAMPLE
    return "\n".join(lines)


#: the end of what ``aso init`` writes: a commented multi-hop topology (Rucio's four-site
#: example), so an operator sees the [[links]] and site keys in place
TOPOLOGY_EXAMPLE = """\
# Topology (docs/configuration.md, [sites.NAME] and [[links]]): every pair of sites above is one
# direct link of [topology] default_distance. To say which links exist, set default_distance = 0
# in [topology] and declare them as below; a file then takes the cheapest path (the links'
# distances plus a hop penalty per intermediate site), through sites available_for_multihop,
# as one FTS multihop job. In this example RSE1 -> RSE4 goes RSE1>RSE2>RSE3>RSE4 (cost 30).
# --- topology example ---
# [sites.RSE1]
# prefix = "root://rse1.example.org//store/rse1"
# fts = "https://fts3.example.org:8446"
# available_for_multihop = true
# hop_penalty = 10
# scratch = "/store/temp/aso/multihop"
# max_incoming = 0
# max_outgoing = 0
#
# [sites.RSE2]
# prefix = "root://rse2.example.org//store/rse2"
# fts = "https://fts3.example.org:8446"
# available_for_multihop = true
#
# [sites.RSE3]
# prefix = "root://rse3.example.org//store/rse3"
# fts = "https://fts3.example.org:8446"
# available_for_multihop = true
#
# [sites.RSE4]
# prefix = "root://rse4.example.org//store/rse4"
# fts = "https://fts3.example.org:8446"
# available_for_multihop = true
#
# [[links]]
# source = "RSE1"
# destination = "RSE2"
# distance = 5
# both_ways = true
# fts = "https://fts3.example.org:8446"
# transfertool = "fts3"
# max_files = 0
#
# [[links]]
# source = "RSE1"
# destination = "RSE3"
# distance = 100
# both_ways = true
#
# [[links]]
# source = "RSE2"
# destination = "RSE3"
# distance = 3
# both_ways = true
#
# [[links]]
# source = "RSE3"
# destination = "RSE4"
# distance = 2
# both_ways = true
#
""".splitlines() + [""]


def render_reference_markdown() -> str:
    """docs/configuration.md, generated from :data:`OPTIONS`."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `aso/config.py` by `aso config-reference`; a test checks it is current.",
        "",
        "aso reads one TOML file: `--config FILE`, else `$ASO_CONFIG`, else `./aso.toml`.",
        "Relative paths are resolved against the folder of that file. Unknown sections or",
        "options are errors that name the option.",
        "",
    ]
    for section in SECTIONS:
        out += [f"## [{section}]", "", "| option | default | meaning |", "|---|---|---|"]
        for option in (o for o in OPTIONS if o.section == section):
            default = _toml_value(option.default).replace("|", "\\|")
            if len(default) > 60:
                default = default[:57] + "..."
            out.append(f"| `{option.name}` | `{default}` | {option.describe().replace('|', '/')} |")
        out.append("")
    out += [
        "## [sites.NAME]",
        "",
        "One table per storage site.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        "| `prefix` | (required) | Storage URL the LFN is appended to (`file:///...`, `http(s)://...`, `root://...`). |",
        "| `fts` | (required) | FTS endpoint of the links into this site that name no endpoint of their own. |",
        "| `available_for_multihop` | `false` | The site may be an intermediate site of a multi-hop path. |",
        "| `hop_penalty` | `[topology] hop_penalty` | Cost added when the site is intermediate. |",
        "| `scratch` | `[topology] scratch` | LFN folder for the copies a multi-hop path leaves here on their way. |",
        "| `max_incoming` | `0` | Most files in flight into the site (0 = no limit). |",
        "| `max_outgoing` | `0` | Most files in flight out of the site (0 = no limit). |",
        "| `globus_collection` | `\"\"` | The site's Globus collection id (a UUID); both sites of a `globus` link need one. See docs/globus.md. |",
        "| `tape` | `false` | A tape site: transfers from it are staged first (`[staging] bring_online`); stage-in requests name it; never `available_for_multihop`. See docs/staging.md. |",
        "",
        "## [[links]]",
        "",
        "One entry per ordered site pair (`both_ways = true` declares the reverse pair too).",
        "A pair no entry names is a direct link of `[topology] default_distance`; set that to 0",
        "and only the entries exist. See docs/topology.md.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        "| `source`, `destination` | (required) | Site names from `[sites]`. |",
        "| `distance` | `1` | The link's cost in path selection (at least 1). |",
        "| `fts` | the destination's `fts` | Endpoint of the transfer tool serving the link. |",
        "| `transfertool` | `\"fts3\"` | The tool serving the link. One of: fts3 (docs/fts3.md), globus (docs/globus.md: endpoint `globus+<[globus] transfer_url>`, no `fts`). |",
        "| `max_files` | `0` | Most files in flight over the link (0 = no limit). |",
        "| `both_ways` | `false` | Declare `destination -> source` with the same values too. |",
        "",
    ]
    return "\n".join(out)
