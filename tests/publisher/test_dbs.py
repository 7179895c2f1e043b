"""The DBS catalog against the documented DBS3 writer/reader payloads (no DBS can run here)."""

from __future__ import annotations

import json

import pytest
import responses
from responses import matchers

from aso.catalogs import open_catalog
from aso.catalogs.base import Block, CatalogFile
from aso.catalogs.dbs import DbsCatalog, bulk_block_payload
from aso.components.publisher import block_name, run_publisher
from aso.errors import AsoError, BackendUnavailable, ValidationError
from tests.publisher.helpers import DATASET, add_files

WRITER = "https://dbs.example.org/dbs/prod/phys03/DBSWriter"
READER = "https://dbs.example.org/dbs/prod/phys03/DBSReader"

META = {
    "outdataset": DATASET,
    "inevents": 250,
    "runlumi": {"1": [3, 4], "2": [7]},
    "parents": ["/store/mc/parent/1.root"],
    "cksum": "12345",
    "md5": "NOTSET",
    "swversion": "CMSSW_13_0_0",
    "psethash": "abc123",
    "globaltag": "GT_v1",
    "acquisitionera": "Run3Summer22",
    "location": "T2_CH_CERN",
}


def _block(n: int = 2) -> Block:
    lfns = [f"/store/user/alice/t/out_{i}.root" for i in range(n)]
    return Block(DATASET, block_name(DATASET, lfns), [CatalogFile(x, 1000 + i, f"0000000{i}", META) for i, x in enumerate(lfns)])


def test_bulk_block_payload_fields():
    block = _block()
    payload = bulk_block_payload(block, user="alice", now=1700000000)
    assert set(payload) == {
        "dataset_conf_list", "file_conf_list", "files", "file_parent_list",
        "processing_era", "acquisition_era", "primds", "dataset", "block",
    }
    assert payload["dataset"] == {
        "dataset": DATASET,
        "processed_ds_name": "alice-Proc-v1",
        "data_tier_name": "USER",
        "dataset_access_type": "VALID",
        "physics_group_name": "CRAB3",
        "last_modification_date": 1700000000,
    }
    assert payload["primds"]["primary_ds_name"] == "Primary"
    assert payload["block"] == {
        "block_name": block.name,
        "origin_site_name": "T2_CH_CERN",
        "open_for_writing": 0,
        "file_count": 2,
        "block_size": 2001,
    }
    f0 = payload["files"][0]
    assert f0["logical_file_name"] == "/store/user/alice/t/out_0.root"
    assert (f0["file_size"], f0["adler32"], f0["check_sum"], f0["event_count"], f0["file_type"]) == (1000, "00000000", "12345", 250, "EDM")
    assert sorted((x["run_num"], x["lumi_section_num"]) for x in f0["file_lumi_list"]) == [(1, 3), (1, 4), (2, 7)]
    assert payload["file_parent_list"][0] == {
        "logical_file_name": "/store/user/alice/t/out_0.root",
        "parent_logical_file_name": "/store/mc/parent/1.root",
    }
    assert payload["file_conf_list"][1] == {
        "lfn": "/store/user/alice/t/out_1.root",
        "release_version": "CMSSW_13_0_0",
        "pset_hash": "abc123",
        "app_name": "cmsRun",
        "output_module_label": "o",
        "global_tag": "GT_v1",
    }
    assert payload["dataset_conf_list"] == [{k: v for k, v in payload["file_conf_list"][0].items() if k != "lfn"}]
    assert payload["acquisition_era"]["acquisition_era_name"] == "Run3Summer22"
    json.dumps(payload)  # the whole document is JSON


def test_bad_dataset_name_named():
    with pytest.raises(ValidationError, match="dataset"):
        bulk_block_payload(Block("not-a-dataset", "not-a-dataset#x", [CatalogFile("/store/a.root", 1, "00000001")]))


@responses.activate
def test_publish_block_posts_one_bulk_request():
    block = _block(3)
    responses.get(f"{READER}/blocks", json=[], match=[matchers.query_param_matcher({"block_name": block.name})])
    post = responses.post(f"{WRITER}/bulkblocks", json=[])
    assert DbsCatalog(WRITER).publish_block(block) is True
    assert post.call_count == 1
    sent = json.loads(post.calls[0].request.body)
    assert sent["block"]["block_name"] == block.name
    assert [f["logical_file_name"] for f in sent["files"]] == [f.lfn for f in block.files]


@responses.activate
def test_publish_block_already_in_dbs_is_not_sent_again():
    block = _block()
    responses.get(f"{READER}/blocks", json=[{"block_name": block.name}])
    post = responses.post(f"{WRITER}/bulkblocks", json=[])
    assert DbsCatalog(WRITER).publish_block(block) is False
    assert post.call_count == 0


@responses.activate
def test_refusals_and_outages():
    block = _block()
    responses.get(f"{READER}/blocks", json=[])
    responses.post(f"{WRITER}/bulkblocks", status=400, body='{"error": "invalid file_lumi_list"}')
    with pytest.raises(AsoError, match="invalid file_lumi_list"):
        DbsCatalog(WRITER).publish_block(block)
    responses.replace(responses.GET, f"{READER}/blocks", status=503, body="down")
    with pytest.raises(BackendUnavailable):
        DbsCatalog(WRITER).publish_block(block)


@responses.activate
def test_dataset_files_reads_reader_api():
    responses.get(
        f"{READER}/files",
        json=[
            {"logical_file_name": "/store/user/alice/t/out_0.root", "block_name": f"{DATASET}#b1"},
            {"logical_file_name": "/store/user/alice/t/out_1.root", "block_name": f"{DATASET}#b1"},
        ],
        match=[matchers.query_param_matcher({"dataset": DATASET, "detail": "1", "validFileOnly": "1"})],
    )
    held = open_catalog("dbs", WRITER).dataset_files(DATASET)
    assert held == {
        "/store/user/alice/t/out_0.root": f"{DATASET}#b1",
        "/store/user/alice/t/out_1.root": f"{DATASET}#b1",
    }


@responses.activate
def test_publisher_into_dbs(local_backend, settings):
    """The whole pass against DBS: reader says one file is there, two blocks go in."""
    lfns = add_files(local_backend, "task_dbs", 21, task_status="COMPLETED")
    responses.get(f"{READER}/files", json=[{"logical_file_name": lfns[0], "block_name": f"{DATASET}#old"}])
    responses.get(f"{READER}/blocks", json=[])
    post = responses.post(f"{WRITER}/bulkblocks", json=[])
    summary = run_publisher(local_backend, DbsCatalog(WRITER), settings)
    assert (summary.already_in_catalog, summary.blocks, summary.published) == (1, 2, 20)
    assert post.call_count == 2
    sent = [json.loads(c.request.body) for c in post.calls]
    assert sorted(len(p["files"]) for p in sent) == [10, 10]
    assert all(p["block"]["block_name"].startswith(DATASET + "#") for p in sent)
    assert lfns[0] not in {f["logical_file_name"] for p in sent for f in p["files"]}
