"""Links that choose their tool: Globus links in the configuration, the endpoint that names
the tool, and the tool maker that opens the right one from an endpoint alone."""

from __future__ import annotations

import pytest

from aso.config import from_dict
from aso.errors import ConfigError
from aso.transfertools import endpoint_for, tool_factory_from_config, tool_kind
from aso.transfertools.fts3 import Fts3Tool
from aso.transfertools.globus import GlobusTool

COLL_A, COLL_B = "0b7a2f3e-5c51-4b6e-9d1e-3c0f6f1a2b01", "6D2E1C4B-8A3F-4E7D-B2C9-1F0E9D8C7B02"


def config(links, globus=None, **site_extra):
    sites = {
        "A": {"prefix": "https://g-a.example/cms", "fts": "https://fts.example:8446", "globus_collection": COLL_A},
        "B": {"prefix": "https://g-b.example", "fts": "https://fts.example:8446", "globus_collection": COLL_B},
        "C": {"prefix": "file:///sites/C", "fts": "https://fts-c.example:8446"},
    }
    for site, extra in site_extra.items():
        sites[site].update(extra)
    data = {"sites": sites, "links": links}
    data["globus"] = {"client_id": "app", "client_secret_file": "/etc/aso/globus.secret"} if globus is None else globus
    return from_dict(data)


def test_a_globus_link_is_served_at_globus_plus_the_transfer_url():
    cfg = config([{"source": "A", "destination": "B", "transfertool": "globus", "both_ways": True},
                  {"source": "A", "destination": "C"}])
    assert cfg.sites["B"].globus_collection == COLL_B.lower()  # canonical spelling
    topology = cfg.topology()
    route = topology.route("A", "B")
    assert route.transfertool == "globus"
    assert route.endpoint == "globus+https://transfer.api.globus.org/v0.10"
    assert tool_kind(route.endpoint) == "globus"
    assert tool_kind(topology.route("A", "C").endpoint) == "fts3"
    # pairs no entry names stay fts3 at the destination's FTS
    assert topology.route("C", "A").endpoint == "https://fts.example:8446"


def test_tool_kind_and_endpoint_for_are_inverse():
    for kind, url in (("globus", "https://transfer.example/v0.10"), ("fts3", "https://fts.example:8446")):
        assert tool_kind(endpoint_for(kind, url)) == kind
    with pytest.raises(ValueError):
        endpoint_for("rucio", "https://x")


@pytest.mark.parametrize(
    ("links", "extra", "message"),
    [
        ([{"source": "A", "destination": "C", "transfertool": "globus"}], {},
         "links[0].transfertool: 'globus' needs a globus_collection at its destination site (sites.C.globus_collection)"),
        ([{"source": "A", "destination": "B", "transfertool": "globus", "fts": "https://fts.example:8446"}], {},
         "links[0].fts: a globus link is served by [globus] transfer_url"),
        ([{"source": "A", "destination": "B"}], {"A": {"globus_collection": "not-a-uuid"}},
         "sites.A.globus_collection: 'not-a-uuid' is not a Globus collection id (a UUID)"),
        ([{"source": "A", "destination": "B"}], {"A": {"globus_collection": 5}},
         "sites.A.globus_collection: expected str"),
    ],
)
def test_globus_link_errors_name_the_field(links, extra, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)").replace("+", r"\+")):
        config(links, **extra)


def test_a_globus_link_needs_the_app_credentials():
    with pytest.raises(ConfigError, match=r"links\[1\].transfertool: 'globus' needs \[globus\] client_id"):
        config([{"source": "A", "destination": "C"}, {"source": "A", "destination": "B", "transfertool": "globus"}],
               globus={})
    with pytest.raises(ConfigError, match="globus.sync_level: 'fast' is not one of"):
        config([], globus={"sync_level": "fast"})


def test_the_tool_maker_opens_the_tool_the_endpoint_names(tmp_path):
    cfg = config([{"source": "A", "destination": "B", "transfertool": "globus"}])
    make = tool_factory_from_config(cfg)
    globus = make("globus+https://transfer.api.globus.org/v0.10", str(tmp_path / "proxy.pem"))
    fts = make("https://fts.example:8446", str(tmp_path / "proxy.pem"))
    try:
        assert isinstance(globus, GlobusTool) and isinstance(fts, Fts3Tool)
        assert globus.base_url == "https://transfer.api.globus.org"
        assert globus.collections.locate("https://g-a.example/cms/store/x") == (COLL_A, "/cms/store/x")
        # every Globus tool of one maker shares one token holder
        assert make("globus+https://transfer.api.globus.org/v0.10", "p").context is globus.context
    finally:
        globus.close()
        fts.close()


def test_a_globus_link_is_a_direct_path_never_a_hop_of_a_longer_one():
    sites = {name: {"prefix": f"https://g-{name.lower()}.example", "fts": "https://fts.example:8446",
                    "globus_collection": f"0b7a2f3e-5c51-4b6e-9d1e-3c0f6f1a2b0{i}", "available_for_multihop": True}
             for i, name in enumerate("ABCD")}
    links = [{"source": "A", "destination": "B", "transfertool": "globus", "distance": 50},
             {"source": "A", "destination": "C", "distance": 1}, {"source": "C", "destination": "B", "distance": 1},
             {"source": "B", "destination": "D", "distance": 1}]
    cfg = from_dict({"sites": sites, "links": links, "topology": {"default_distance": 0, "hop_penalty": 0},
                     "globus": {"client_id": "app", "client_secret_file": "/s"}})
    topology = cfg.topology()
    assert topology.route("A", "B").path.text() == "A>C>B"  # cheaper over fts3 links
    assert topology.route("A", "B").transfertool == "fts3"
    cfg.values["topology"]["hop_penalty"] = 100
    direct = cfg.topology().route("A", "B")
    assert (direct.path.text(), direct.transfertool, direct.path.cost) == ("A>B", "globus", 50)
    # A -> D would be A>B>D over the Globus link: never; over A>C>B>D instead
    assert topology.route("A", "D").path.text() == "A>C>B>D"
