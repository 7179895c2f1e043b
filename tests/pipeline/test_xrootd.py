"""The pipeline between two XRootD sites: rows injected into a real ``aso server``, moved by
``aso transfer``/``monitor``/``reporter`` passes through a real ``aso fts-server`` (HTTPS),
which copies root:// to root:// between two real xrootd daemons."""

from __future__ import annotations

import random
import zlib

from tests.pipeline.conftest import users_for
from tests.pipeline.harness import Installation, all_in
from tests.state.servers import start_state_server
from tests.xrootd_server import xrootd_server


def test_files_move_between_two_xrootd_sites(tmp_path, pki, fts):
    rng = random.Random(11)
    folder = tmp_path / "state-server"
    folder.mkdir()
    service, url = start_state_server(folder)
    try:
        with xrootd_server("src") as source, xrootd_server("dst") as dest:
            inst = Installation(tmp_path / "aso", fts.url, f'fts.ca_dir="{fts.ca_dir}"', f"state.url={url}",
                                'state.token="service-token"', 'aso.instance="test"',
                                sites={"T2_XX_Source": source.url, "T2_YY_Dest": dest.url})
            assert inst.config.site("T2_XX_Source").prefix == source.url
            assert inst.config.site("T2_YY_Dest").pfn("/store/user/a/x.root") == f"{dest.url}/store/user/a/x.root"
            dest.mkdir("store")  # the site's namespace; folders below it the copies make

            (user,) = users_for(pki, inst, 1)
            requests, blobs = [], {}
            for i in range(12):
                data = rng.randbytes(1000 + 997 * i)
                tail = f"{user}/xrd/{i:03d}/out_{i}.root"
                src_lfn, dst_lfn = f"/store/temp/user/{tail}", f"/store/user/{tail}"
                source.put(src_lfn, data)
                blobs[dst_lfn] = data
                requests.append({
                    "username": user, "taskname": f"221122_000000:{user}_xrd", "source": "T2_XX_Source",
                    "destination": "T2_YY_Dest", "source_lfn": src_lfn, "destination_lfn": dst_lfn,
                    "filesize": len(data), "checksum": f"{zlib.adler32(data):08x}", "publish": 0, "job_id": str(i),
                    "job_retry_count": 0, "type": "output",
                })
            inst.inject(requests)
            inst.run_until(all_in("DONE"))

            rows = inst.rows()
            assert len(rows) == 12 and {r["tm_transfer_state"] for r in rows} == {"DONE"}
            for lfn, data in blobs.items():
                assert (dest.root / lfn.lstrip("/")).read_bytes() == data, lfn
            assert not list(dest.root.rglob("*.part"))
            assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "stage": 0, "submit": 0}
    finally:
        service.stop()
