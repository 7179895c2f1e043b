"""Checksums as FTS3 speaks them: ``ALG:value`` strings, adler32, and the verify modes.

FTS3 accepts ``"ADLER32:1a2b3c4d"`` or just ``"ADLER32"`` (compute, compare source and
destination), compares adler32 values ignoring case and leading zeros, and checks in one
of four modes: ``s`` (source vs the user's value), ``t`` (destination vs the user's value),
``b`` (both, plus source vs destination), ``n`` (none).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from aso.ftsd.errors import FtsHttpError

SUPPORTED = ("ADLER32",)
MODES = ("s", "t", "b", "n")
_ALG = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    value: str | None  # None: compute and compare source with destination only

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}" if self.value else self.algorithm


def parse(text: str | None, field: str = "checksum") -> Checksum:
    """``"ADLER32:1234"``, ``"adler32"`` or None (the default, ADLER32 without a value)."""
    if text is None or text == "":
        return Checksum("ADLER32", None)
    if not isinstance(text, str):
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be a string")
    alg, sep, value = text.partition(":")
    alg = alg.strip().upper()
    if not _ALG.match(alg):
        raise FtsHttpError(400, f"Invalid value within the request: {field} {text!r} is not ALGORITHM[:VALUE]")
    if alg not in SUPPORTED:
        raise FtsHttpError(400, f"Invalid value within the request: checksum algorithm {alg} is not supported (only ADLER32)")
    value = value.strip()
    if sep and not re.fullmatch(r"[0-9A-Fa-f]{1,8}", value):
        raise FtsHttpError(400, f"Invalid value within the request: {field} {text!r} is not an adler32 value")
    return Checksum(alg, normalise(value) if sep else None)


def normalise(value: str) -> str:
    """Eight lower-case hex digits (FTS3 left-pads user values)."""
    return value.strip().lower().rjust(8, "0")


def same(a: str, b: str) -> bool:
    """FTS3's comparison: case-insensitive, leading zeros ignored."""
    return a.strip().lower().lstrip("0") == b.strip().lower().lstrip("0")


def mode_from_param(value, has_value: bool) -> str:
    """The stored verify mode from the submission's ``verify_checksum`` parameter."""
    if value is None:
        return "t" if has_value else "n"
    if isinstance(value, bool):
        if value:
            return "b"
        return "t" if has_value else "n"
    if isinstance(value, str) and value.lower() in ("source", "target", "both", "none", *MODES):
        # the official client sends the stored letter itself ("n" when not asked to verify)
        return value.lower()[0]
    raise FtsHttpError(400, f"Invalid value within the request: verify_checksum {value!r} (true, false, source, target, both or none)")


class Adler32:
    """Running adler32 over a stream of buffers."""

    def __init__(self, start: int = 1):
        self.value = start

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.adler32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value & 0xFFFFFFFF:08x}"


def adler32_of_file(path: str, buffer_size: int = 8 * 1024 * 1024) -> str:
    digest = Adler32()
    with open(path, "rb") as fh:
        while chunk := fh.read(buffer_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify(mode: str, wanted: Checksum, source_value: str | None, destination_value: str | None) -> str | None:
    """None when the copy passes ``mode``; else FTS3's reason text (without the scope)."""
    if mode == "n" or not mode:
        return None
    user = wanted.value
    if mode in ("s", "b") and user and source_value and not same(user, source_value):
        return f"Source and user-defined {wanted.algorithm} checksum do not match ({source_value} != {user})"
    if mode in ("t", "b") and user and destination_value and not same(user, destination_value):
        return f"Destination and user-defined {wanted.algorithm} checksum do not match ({destination_value} != {user})"
    if mode == "b" and source_value and destination_value and not same(source_value, destination_value):
        return f"Source and destination {wanted.algorithm} checksum do not match ({source_value} != {destination_value})"
    return None
