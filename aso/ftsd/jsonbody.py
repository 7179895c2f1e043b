"""Request bodies as JSON, parsed the one way every route of the service parses them.

Whatever a client sends, parsing ends in a value or in FtsHttpError(400) with FTS3's body:
``NaN``/``Infinity`` and numbers too large for a float are refused (JSON has no such
numbers, and an integer field would overflow on them), nesting is limited (a body nested
100,000 deep would otherwise exhaust Python's recursion limit), and strings must be valid
Unicode (a lone surrogate escape cannot be stored or written anywhere).
"""

from __future__ import annotations

import json
import math
from typing import Any

from aso.ftsd.errors import FtsHttpError

#: deepest nesting of arrays and objects accepted in a request body
MAX_DEPTH = 64
#: largest request body accepted (413 beyond)
MAX_BODY_BYTES = 32 * 1024 * 1024

_BAD = "Badly formatted JSON request"


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _check(value: Any) -> None:
    """Depth and string validity of a parsed value, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise FtsHttpError(400, f"{_BAD}: a string is not valid Unicode (lone surrogate)") from None
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise FtsHttpError(400, f"{_BAD}: nested deeper than {MAX_DEPTH} levels")
            children = item if isinstance(item, list) else [*item.keys(), *item.values()]
            stack.extend((child, depth + 1) for child in children)


def parse_json(data: bytes | str, empty: Any = None) -> Any:
    """The JSON value of a request body (``empty`` for an empty body); FtsHttpError(400)."""
    if not data:
        return empty
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise FtsHttpError(400, f"{_BAD}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError, TypeError):
        raise FtsHttpError(400, _BAD) from None
    _check(value)
    return value
