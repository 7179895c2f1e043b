"""Option constraints declared in OPTIONS are checked when a file is loaded (and so by
``aso init --set``), before any component acquires a row."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

from aso.cli import cli
from aso.config import OPTIONS, check_value, from_dict, load_config
from aso.errors import ConfigError


def test_every_default_satisfies_its_own_constraint():
    for option in OPTIONS:
        assert check_value(option, option.default) == option.default, option.key


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"aso": {"log_level": "LOUD"}}, "aso.log_level: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
        ({"state": {"url": "not-a-url"}}, "state.url: 'not-a-url' is not a URL"),
        ({"state": {"url": "mysql://u@db/aso"}}, "state.url: mysql:// is not supported"),
        ({"state": {"url": "ftp://example.org/x"}}, "state.url: ftp:// is not supported"),
        ({"state": {"url": "http://"}}, "state.url: 'http://' names no host"),
        ({"server": {"db_url": "http://127.0.0.1:8080"}}, "server.db_url: http:// is not supported"),
        ({"transfer": {"max_files_per_job": 0}}, "transfer.max_files_per_job: must be at least 1, got 0"),
        ({"transfer": {"threads": -1}}, "transfer.threads: must be at least 1"),
        ({"server": {"port": 70000}}, "server.port: must be at most 65535"),
        ({"fts": {"priority": 6}}, "fts.priority: must be at most 5"),
        ({"state": {"timeout": 0}}, "state.timeout: must be more than 0"),
        ({"fts": {"verify_checksum": "maybe"}}, "fts.verify_checksum: 'maybe' is not one of"),
        ({"publisher": {"catalog": "nosuch"}}, "publisher.catalog: 'nosuch' is not one of local, dbs"),
    ],
)
def test_constraints_name_the_option(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        from_dict(data)


def test_accepted_spellings():
    config = from_dict({"aso": {"log_level": "debug"}, "state": {"url": "postgresql+psycopg://u@db/aso"},
                        "server": {"db_url": ""}})
    assert config.aso.log_level == "DEBUG"
    assert config.state.url == "postgresql+psycopg://u@db/aso"
    assert from_dict({"state": {"url": "https://state.example.org:8443"}}).state.url.startswith("https://")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "aso.toml"
    path.write_bytes(b'[aso]\nworker = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_init_refuses_a_value_out_of_range(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "x"), "--set", "transfer.max_files_per_job=0"])
    assert result.exit_code == 2
    assert result.stderr == "error: transfer.max_files_per_job: must be at least 1, got 0\n"
    assert not (tmp_path / "x" / "aso.toml").exists()


def test_the_generated_file_and_docs_state_the_constraints(tmp_path):
    from aso.config import render_reference_markdown, render_toml

    assert "At least 1." in render_reference_markdown()
    assert "# Files per FTS job (one job per link chunk). At least 1." in render_toml({}, {})


_SITES = {name: {"prefix": f"file:///sites/{name}", "fts": "https://fts.example:8446"} for name in ("A", "B", "C")}


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ([{"source": "A", "destination": "B"}, {"source": "B", "destination": "C"}, {"source": "X", "destination": "C"}],
         "links[2].source: 'X' is not a site of [sites]"),
        ([{"source": "A", "destination": "Y"}], "links[0].destination: 'Y' is not a site of [sites]"),
        ([{"source": "A", "destination": "A"}], "links[0].destination: a link joins two different sites"),
        ([{"source": "A", "destination": "B"}, {"source": "A", "destination": "B", "distance": 3}],
         "links[1]: the link A -> B is configured twice"),
        ([{"source": "A", "destination": "B", "both_ways": True}, {"source": "B", "destination": "A"}],
         "links[1]: the link B -> A is configured twice"),
        ([{"source": "A", "destination": "B", "distance": 0}], "links[0].distance: must be at least 1, got 0"),
        ([{"source": "A", "destination": "B", "distance": "far"}], "links[0].distance: expected an integer"),
        ([{"source": "A", "destination": "B", "distance": True}], "links[0].distance: expected an integer"),
        ([{"source": "A", "destination": "B", "transfertool": "rucio"}], "links[0].transfertool: 'rucio' is not one of fts3, globus"),
        ([{"source": "A", "destination": "B", "transfertool": "globus"}],
         "links[0].transfertool: 'globus' needs a globus_collection at its source site"),
        ([{"source": "A", "destination": "B", "speed": 3}], "links[0].speed: unknown key"),
        ([{"destination": "B"}], "links[0].source: missing"),
        ([{"source": "A", "destination": "B", "max_files": -1}], "links[0].max_files: must be at least 0"),
        ([5], "links[0]: expected a table"),
    ],
)
def test_link_errors_name_the_field(links, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict({"sites": _SITES, "links": links})


def test_links_must_be_an_array_of_tables():
    with pytest.raises(ConfigError, match=r"links: expected an array of tables"):
        from_dict({"sites": _SITES, "links": {"source": "A"}})


@pytest.mark.parametrize(
    ("site", "message"),
    [
        ({"available_for_multihop": "yes"}, "sites.A.available_for_multihop: expected true or false"),
        ({"tape": "yes"}, "sites.A.tape: expected true or false, got 'yes'"),
        ({"tape": 1}, "sites.A.tape: expected true or false, got 1"),
        ({"tape": True, "available_for_multihop": True}, "sites.A.available_for_multihop: a tape site"),
        ({"hop_penalty": -1}, "sites.A.hop_penalty: must be at least 0"),
        ({"scratch": "relative/path"}, "sites.A.scratch"),
        ({"colour": "red"}, "sites.A.colour: unknown key"),
    ],
)
def test_site_topology_keys_are_checked(site, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"sites": {**_SITES, "A": {**_SITES["A"], **site}}})


def test_a_tape_site_is_flagged_and_disk_is_the_default():
    config = from_dict({"sites": {**_SITES, "A": {**_SITES["A"], "tape": True}}})
    assert config.site("A").tape and not config.site("B").tape


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("bring_online", 0, "staging.bring_online: must be at least 1"),
        ("copy_pin_lifetime", -2, "staging.copy_pin_lifetime: must be at least -1"),
        ("stagein_pin_lifetime", "long", "staging.stagein_pin_lifetime: expected int"),
    ],
)
def test_staging_options_are_checked(option, value, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"staging": {option: value}})


def test_bring_online_must_end_before_the_monitor_gives_up_with_tape_sites():
    tape = {**_SITES, "A": {**_SITES["A"], "tape": True}}
    with pytest.raises(ConfigError, match=r"staging.bring_online: 43200 s must be less than monitor.job_timeout"):
        from_dict({"sites": tape, "monitor": {"job_timeout": 43200}})
    from_dict({"sites": _SITES, "monitor": {"job_timeout": 60}})  # no tape: no staging job to outlive


def test_staging_defaults_are_rucios():
    staging = from_dict({}).staging
    assert (staging.bring_online, staging.copy_pin_lifetime, staging.stagein_pin_lifetime) == (43200, 172800, -1)


def test_init_writes_a_commented_topology_example_that_loads(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "x" / "aso.toml").read_text()
    assert "# [[links]]" in text and "# available_for_multihop = " in text
    config = load_config(tmp_path / "x" / "aso.toml")
    assert config.links == []  # the example is commented out: every pair stays one direct link
    # uncommented, the example is a valid configuration of its own
    example = "\n".join(line[2:] for line in text.split("# --- topology example ---", 1)[1].splitlines()
                        if line.startswith("# "))
    data = tomllib.loads(example)
    topology = from_dict({**data, "topology": {"default_distance": 0}}).topology()
    assert topology.route("RSE1", "RSE4").path.text() == "RSE1>RSE2>RSE3>RSE4"
