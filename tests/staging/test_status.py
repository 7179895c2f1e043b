"""aso status with tape sites: stage-in requests per state and transfers from tape in flight."""

from __future__ import annotations

import json

from click.testing import CliRunner

from aso.cli import cli
from aso.config import load_config
from aso.installation import init_installation
from aso.state import backend_from_config
from tests.state.test_contract import request
from tests.state.test_stagein_contract import TAPE, stagein


def run(config, *args):
    return CliRunner().invoke(cli, ["--config", config, *args])


def test_status_counts_stageins_and_transfers_from_tape(tmp_path):
    config = init_installation(tmp_path / "inst")
    with open(config, "a") as fh:
        fh.write(f'\n[sites.{TAPE}]\nprefix = "file://{tmp_path}/tape"\nfts = "http://127.0.0.1:8446"\ntape = true\n')
    backend = backend_from_config(load_config(config))
    backend.inject([stagein(i) for i in range(3)] + [request(i, source=TAPE) for i in range(4)] + [request(9)])
    assert backend.acquire_transfers(["alice"], 2, request_type="stagein") == 2
    assert backend.acquire_transfers(["alice"], 1, request_type="transfer") == 1
    backend.close()

    answer = run(str(config), "status", "--json")
    assert answer.exit_code == 0, answer.output
    staging = json.loads(answer.output)["staging"]
    assert staging["tape_sites"] == [TAPE]
    assert staging["stagein"] == {"NEW": 1, "ACQUIRED": 2}
    # the oldest row went first: one of the tape transfers (or the disk one) is in flight
    from_tape = {(e["source"], e["destination"]): (e["in_flight"], e["waiting"]) for e in staging["from_tape"]}
    assert set(from_tape) == {(TAPE, "T2_YY_Dest")} and sum(from_tape[(TAPE, "T2_YY_Dest")]) == 4
    table = run(str(config), "status")
    assert table.exit_code == 0 and "stage-in requests: 1 NEW, 2 ACQUIRED" in table.output
    assert "transfers from tape sites" in table.output


def test_status_without_tape_sites_answers_as_before(tmp_path):
    config = init_installation(tmp_path / "inst")
    backend = backend_from_config(load_config(config))
    backend.inject([request(0)])
    backend.close()
    answer = run(str(config), "status", "--json")
    assert answer.exit_code == 0 and isinstance(json.loads(answer.output), list)
