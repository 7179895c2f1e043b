"""The catalog interface the publisher programs against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CatalogFile:
    lfn: str
    size: int
    adler32: str
    #: the file's metadata document from the state backend (events, lumis, parents, ...)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Block:
    dataset: str
    name: str
    files: list[CatalogFile]


class Catalog(ABC):
    @abstractmethod
    def publish_block(self, block: Block) -> bool:
        """Publish the block atomically. Idempotent by block name: a block already in the
        catalog is left alone and False is returned; True when it was published now."""

    @abstractmethod
    def dataset_files(self, dataset: str) -> dict[str, str]:
        """LFN -> block name of every file the dataset already holds."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
