"""CMS DBS3 as a catalog: blocks go in through the writer's bulk block insertion
(``POST <writer>/bulkblocks``, what dbsClient's insertBulkBlock sends), and what a dataset
holds is read from the reader's ``files`` API.

A file's metadata document (as the post-job uploads it to ``filemetadata``) supplies the
DBS-specific parts: ``inevents``, ``runlumi`` ({run: [lumi, ...]}), ``parents``,
``cksum``, ``md5``, ``swversion``, ``psethash``, ``globaltag``, ``acquisitionera``,
``processing_version``, ``primary_ds_type`` and ``location`` (the origin site).
"""

from __future__ import annotations

import time
from typing import Any

import requests

from aso.catalogs.base import Block, Catalog, CatalogFile
from aso.errors import AsoError, BackendUnavailable, ValidationError

#: DBS answers a bulk insertion of a block it already has with an error naming the block as
#: existing; treat that as "already published" so a re-run after a crash is idempotent.
_ALREADY_THERE = ("already exist", "duplicate", "unique constraint")


def split_dataset(dataset: str) -> tuple[str, str, str]:
    """/Primary/Processed/TIER -> its three parts (ValidationError if not that shape)."""
    parts = dataset.split("/")
    if len(parts) != 4 or parts[0] != "" or not all(parts[1:]):
        raise ValidationError("dataset", f"{dataset!r} is not /<primary>/<processed>/<tier>")
    return parts[1], parts[2], parts[3]


def _lumi_list(runlumi: Any) -> list[dict[str, int]]:
    out = []
    for run, lumis in (runlumi or {}).items():
        for lumi in lumis:
            out.append({"run_num": int(run), "lumi_section_num": int(lumi)})
    return out


def _conf(meta: dict[str, Any]) -> dict[str, str]:
    return {
        "release_version": str(meta.get("swversion", "CMSSW_NOTSET")),
        "pset_hash": str(meta.get("psethash", "NOTSET")),
        "app_name": "cmsRun",
        "output_module_label": str(meta.get("output_module_label", "o")),
        "global_tag": str(meta.get("globaltag", "NOTSET")),
    }


def bulk_block_payload(block: Block, *, user: str = "aso", now: int | None = None) -> dict[str, Any]:
    """The insertBulkBlock document for ``block`` (one request carries the whole block)."""
    primary, processed, tier = split_dataset(block.dataset)
    if not block.files:
        raise ValidationError("files", "a block needs at least one file")
    now = int(time.time()) if now is None else now
    first = block.files[0].metadata
    files, file_conf, parents = [], [], []
    for f in block.files:
        meta = f.metadata
        files.append(
            {
                "logical_file_name": f.lfn,
                "file_size": int(f.size),
                "adler32": f.adler32,
                "check_sum": str(meta.get("cksum", "NOTSET")),
                "md5": meta.get("md5", "NOTSET"),
                "event_count": int(meta.get("inevents", 0)),
                "file_type": "EDM",
                "file_lumi_list": _lumi_list(meta.get("runlumi")),
                "auto_cross_section": 0.0,
                "last_modified_by": user,
            }
        )
        file_conf.append({**_conf(meta), "lfn": f.lfn})
        parents.extend({"logical_file_name": f.lfn, "parent_logical_file_name": p} for p in meta.get("parents", []))
    return {
        "dataset_conf_list": [_conf(first)],
        "file_conf_list": file_conf,
        "files": files,
        "file_parent_list": parents,
        "processing_era": {
            "processing_version": int(first.get("processing_version", 1)),
            "description": "aso",
        },
        "acquisition_era": {
            "acquisition_era_name": str(first.get("acquisitionera", "null")),
            "start_date": 0,
        },
        "primds": {
            "primary_ds_name": primary,
            "primary_ds_type": str(first.get("primary_ds_type", "mc")),
            "create_by": user,
            "creation_date": now,
        },
        "dataset": {
            "dataset": block.dataset,
            "processed_ds_name": processed,
            "data_tier_name": tier,
            "dataset_access_type": "VALID",
            "physics_group_name": "CRAB3",
            "last_modification_date": now,
        },
        "block": {
            "block_name": block.name,
            "origin_site_name": str(first.get("location", "UNKNOWN")),
            "open_for_writing": 0,
            "file_count": len(block.files),
            "block_size": sum(int(f.size) for f in block.files),
        },
    }


class DbsCatalog(Catalog):
    """``url`` is the writer (…/DBSWriter); the reader is the same URL with DBSReader,
    unless ``reader_url`` is given."""

    def __init__(
        self,
        url: str,
        *,
        reader_url: str = "",
        cert: tuple[str, str] | None = None,
        verify: bool | str = True,
        timeout: float = 300.0,
        user: str = "aso",
    ) -> None:
        self.writer = url.rstrip("/")
        self.reader = (reader_url or self.writer.replace("DBSWriter", "DBSReader")).rstrip("/")
        self.session = requests.Session()
        self.session.cert = cert
        self.session.verify = verify
        self.session.headers.update({"Accept": "application/json", "Content-Type": "application/json"})
        self.timeout = timeout
        self.user = user

    def _call(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise BackendUnavailable(f"DBS at {url}: {exc}") from exc

    def publish_block(self, block: Block) -> bool:
        payload = bulk_block_payload(block, user=self.user)
        if self.block_exists(block.name):
            return False
        resp = self._call("POST", f"{self.writer}/bulkblocks", json=payload)
        if resp.ok:
            return True
        text = resp.text[:1000]
        if any(marker in text.lower() for marker in _ALREADY_THERE) and self.block_exists(block.name):
            return False
        if resp.status_code >= 500 and not text:
            raise BackendUnavailable(f"DBS bulkblocks: HTTP {resp.status_code}")
        raise AsoError(f"DBS refused block {block.name}: HTTP {resp.status_code}: {text}")

    def block_exists(self, name: str) -> bool:
        resp = self._call("GET", f"{self.reader}/blocks", params={"block_name": name})
        self._check(resp, "blocks")
        return bool(resp.json())

    def dataset_files(self, dataset: str) -> dict[str, str]:
        resp = self._call(
            "GET", f"{self.reader}/files", params={"dataset": dataset, "detail": 1, "validFileOnly": 1}
        )
        self._check(resp, "files")
        return {row["logical_file_name"]: row.get("block_name", "") for row in resp.json()}

    @staticmethod
    def _check(resp: requests.Response, api: str) -> None:
        if resp.status_code >= 500:
            raise BackendUnavailable(f"DBS {api}: HTTP {resp.status_code}: {resp.text[:300]}")
        if not resp.ok:
            raise AsoError(f"DBS {api}: HTTP {resp.status_code}: {resp.text[:300]}")

    def close(self) -> None:
        self.session.close()


__all__ = ["DbsCatalog", "bulk_block_payload", "split_dataset", "CatalogFile"]
