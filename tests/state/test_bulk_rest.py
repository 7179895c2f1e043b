"""Large batches over REST, as a production deployment meets them: gunicorn with its default
limits in front, hundreds of ids per call, long LFNs, and an injection that is refused
part-way (issue 11, items 1 and 5)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from aso.errors import ValidationError
from aso.state import open_backend
from aso.validate import lfn_id
from tests.procs import Service, free_port
from tests.state.servers import write_server_config
from tests.state.test_contract import request


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory):
    """``aso server`` under gunicorn exactly as docs/rest-api.md runs it: default limits
    (a 4,094-byte request line) and two workers; max_batch at its default (10,000)."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    config = write_server_config(tmp)
    text = config.read_text().replace("max_batch = 20000", "max_batch = 10000")
    config.write_text(text)
    port = free_port()
    gunicorn = shutil.which("gunicorn")
    assert gunicorn, "gunicorn is part of the 'server' extra"
    service = Service([gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "aso.state.server:app_from_env()"],
                      port, tmp / "gunicorn.log", env={"ASO_CONFIG": str(config)}).start()
    yield f"http://127.0.0.1:{port}", tmp / "state.db"
    service.stop()


def backend(url):
    return open_backend(url, worker="w", token="service-token", instance="test", retries=1)


def rows_in(db, user):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM filetransfersdb WHERE tm_username = ?", (user,)).fetchone()[0]


def test_hundreds_of_ids_and_lfns_per_call_pass_gunicorns_limits(gunicorn_url):
    url, _ = gunicorn_url
    b = backend(url)
    reqs = [request(i, "hana", "task_h") for i in range(600)]
    b.inject(reqs)
    ids = [lfn_id(r["source_lfn"]) for r in reqs]
    assert len(b.get_transfers(ids)) == 600
    lfns = [r["destination_lfn"] for r in reqs]
    b.put_file_metadata([{"lfn": x, "taskname": "task_h", "metadata": {"n": i}} for i, x in enumerate(lfns)])
    found = b.get_file_metadata(lfns)
    assert len(found) == 600 and found[lfns[7]] == {"n": 7}
    b.close()


def test_an_injection_with_a_bad_row_far_down_writes_nothing_and_names_it(gunicorn_url):
    url, db = gunicorn_url
    b = backend(url)
    reqs = [request(i, "ivan", "task_i") for i in range(12_000)]
    reqs[11_000]["filesize"] = "lots"
    with pytest.raises(ValidationError) as err:
        b.inject(reqs)
    assert err.value.field == "[11000].filesize"
    assert rows_in(db, "ivan") == 0
    b.close()


def test_long_lfns_are_split_by_size_not_refused(gunicorn_url):
    url, db = gunicorn_url
    b = backend(url)
    tail = "x" * 850
    reqs = []
    for i in range(10_000):
        r = request(i, "jane", "task_j")
        r["source_lfn"] = f"/store/temp/user/jane/{tail}/{i}.root"
        r["destination_lfn"] = f"/store/user/jane/{tail}/{i}.root"
        reqs.append(r)
    result = b.inject(reqs)  # about 18 MB of JSON: over the server's 16 MiB body limit at once
    assert len(result.inserted) == 10_000 and rows_in(db, "jane") == 10_000
    b.close()
