"""A pass whose state backend is an ``aso server`` starts without SQLAlchemy.

Importing SQLAlchemy, and the dialects that the schema's partial indexes load, took about a
quarter of a second of every cron pass's start. On the REST backend none of it is used: the
schema is read only where the transfer row's columns are asked for (the store, the server).
The publisher is left out here: its default catalog is a local SQL database, which needs
SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.procs import aso_command
from tests.state.servers import start_state_server

#: runs the aso CLI as ``aso`` does, and as it exits writes whether SQLAlchemy was loaded
#: to the file named by $ASO_PROBE
_PROBE = (
    "import atexit, os, runpy, sys\n"
    "atexit.register(lambda: open(os.environ['ASO_PROBE'], 'w').write(str('sqlalchemy' in sys.modules)))\n"
    "sys.argv[0] = 'aso'\n"
    "runpy.run_module('aso.cli', run_name='__main__', alter_sys=True)\n"
)


@pytest.fixture(scope="module")
def rest_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rest-passes")
    service, url = start_state_server(folder)
    try:
        subprocess.run(aso_command("init", str(folder / "aso"), "--fts", "http://127.0.0.1:9",
                                   "--set", f"state.url={url}", "--set", 'state.token="service-token"',
                                   "--set", 'aso.instance="test"'),
                       check=True, capture_output=True, cwd=folder)
        yield folder / "aso" / "aso.toml"
    finally:
        service.stop()


@pytest.mark.parametrize("component", ["transfer", "monitor", "reporter", "retry-manager"])
def test_a_pass_on_the_rest_backend_does_not_load_sqlalchemy(rest_config, tmp_path, component):
    probe = tmp_path / "loaded"
    done = subprocess.run([sys.executable, "-c", _PROBE, "--config", str(rest_config), component, "--json"],
                          capture_output=True, text=True, cwd=rest_config.parent,
                          env={**os.environ, "ASO_PROBE": str(probe)})
    assert done.returncode == 0, done.stderr
    assert not json.loads(done.stdout).get("errors"), done.stdout  # a pass that did its work, on the server
    assert probe.read_text() == "False", f"aso {component} on the REST backend imported SQLAlchemy"


def test_the_transfer_columns_are_still_the_schemas_in_its_order():
    import aso.state
    from aso.state import TRANSFER_COLUMNS, records
    from aso.state.schema import transfers

    assert [c.name for c in transfers.columns] == TRANSFER_COLUMNS
    assert records.TRANSFER_COLUMNS is TRANSFER_COLUMNS  # read once, then kept
    assert "tm_id" in TRANSFER_COLUMNS and "tm_sid" in TRANSFER_COLUMNS
    with pytest.raises(AttributeError):
        aso.state.NO_SUCH_NAME  # noqa: B018
    with pytest.raises(AttributeError):
        records.NO_SUCH_NAME  # noqa: B018
