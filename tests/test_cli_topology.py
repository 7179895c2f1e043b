"""``aso topology`` and ``aso topology path``: tables, JSON, and NO_PATH's one line and exit code."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aso.cli import cli

CONFIG = """
[topology]
default_distance = 0

[sites.RSE1]
prefix = "file:///sites/RSE1"
fts = "https://fts1.example.org:8446"
[sites.RSE2]
prefix = "file:///sites/RSE2"
fts = "https://fts2.example.org:8446"
available_for_multihop = true
max_incoming = 40
[sites.RSE3]
prefix = "file:///sites/RSE3"
fts = "https://fts3.example.org:8446"
available_for_multihop = true
hop_penalty = 1
[sites.RSE4]
prefix = "file:///sites/RSE4"
fts = "https://fts4.example.org:8446"
[sites.LONELY]
prefix = "file:///sites/LONELY"
fts = "https://fts4.example.org:8446"

[[links]]
source = "RSE1"
destination = "RSE2"
distance = 5
both_ways = true
fts = "https://fts-12.example.org:8446"
max_files = 100
[[links]]
source = "RSE1"
destination = "RSE3"
distance = 100
both_ways = true
[[links]]
source = "RSE2"
destination = "RSE3"
distance = 3
both_ways = true
[[links]]
source = "RSE3"
destination = "RSE4"
distance = 2
both_ways = true
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "aso.toml"
    path.write_text(CONFIG)
    return str(path)


def run(config, *args):
    return CliRunner().invoke(cli, ["--config", config, "topology", *args], prog_name="aso")


def test_lists_sites_and_links(config):
    result = run(config)
    assert result.exit_code == 0, result.output
    for text in ("RSE1", "LONELY", "multihop", "penalty", "links"):  # the rest may be folded to the width
        assert text in result.output
    data = json.loads(run(config, "--json").output)
    sites = {s["name"]: s for s in data["sites"]}
    assert sites["RSE2"]["available_for_multihop"] and not sites["RSE1"]["available_for_multihop"]
    assert sites["RSE2"]["max_incoming"] == 40 and sites["RSE3"]["hop_penalty"] == 1 and sites["RSE2"]["hop_penalty"] == 10
    links = {(link["source"], link["destination"]): link for link in data["links"]}
    assert len(links) == 8 and all(link["configured"] for link in links.values())
    assert links[("RSE1", "RSE2")]["endpoint"] == "https://fts-12.example.org:8446"
    assert links[("RSE2", "RSE1")]["max_files"] == 100  # both_ways: the same values
    assert links[("RSE3", "RSE4")]["endpoint"] == "https://fts4.example.org:8446"  # the destination's fts


def test_implied_links_are_shown_as_such(tmp_path):
    path = tmp_path / "aso.toml"
    path.write_text('[sites.A]\nprefix = "file:///a"\nfts = "https://f:8446"\n[sites.B]\nprefix = "file:///b"\nfts = "https://f:8446"\n')
    data = json.loads(run(str(path), "--json").output)
    assert [(link["source"], link["destination"], link["distance"], link["configured"]) for link in data["links"]] == [
        ("A", "B", 1, False), ("B", "A", 1, False)]
    assert "implied" in run(str(path)).output


def test_path_text_and_json(config):
    result = run(config, "path", "RSE1", "RSE4")
    assert result.exit_code == 0, result.output
    # 5 + 3 + 2 + penalties 10 (RSE2) and 1 (RSE3)
    assert result.output.startswith("RSE1>RSE2>RSE3>RSE4  (multi-hop: cost 21, 3 hop(s), submitted to https://fts-12.example.org:8446")
    data = json.loads(run(config, "path", "RSE1", "RSE4", "--json").output)
    assert data["path"] == ["RSE1", "RSE2", "RSE3", "RSE4"] and data["cost"] == 21 and data["hops"] == 3
    assert data["multihop"] and data["endpoint"] == "https://fts-12.example.org:8446" and len(data["links"]) == 3
    direct = json.loads(run(config, "path", "RSE3", "RSE4", "--json").output)
    assert direct["path"] == ["RSE3", "RSE4"] and not direct["multihop"]


def test_no_path_is_one_line_on_stderr_and_exit_1(config):
    result = run(config, "path", "RSE1", "LONELY")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "NO_PATH: no link or multi-hop path from RSE1 to LONELY\n"


def test_an_unknown_site_is_a_configuration_error(config):
    result = run(config, "path", "RSE1", "NOPE")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: sites.NOPE: no such site in the configuration"


def test_help():
    result = CliRunner().invoke(cli, ["topology", "path", "--help"])
    assert result.exit_code == 0 and "NO_PATH" in result.output
