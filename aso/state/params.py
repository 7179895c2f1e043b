"""Reading one request's parameters: the query string, a form body or a JSON body.

CRAB clients send form bodies (lists as repeated keys) and sometimes JSON; both read the
same way here. JSON is parsed defensively (no NaN, bounded nesting) so that no body can
make a server error: a bad one is a ValidationError naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from aso import validate
from aso.errors import ValidationError

#: deeper JSON than this is refused; no request of this API nests more than 4 levels
MAX_JSON_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValidationError("body", f"{name} is not a JSON number this API accepts")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, iteratively, stopping once past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json_body(data: bytes, field: str = "body") -> Any:
    """A request body as JSON, or a ValidationError naming ``body``: never a server error.

    NaN and Infinity are refused, and so is nesting deeper than MAX_JSON_DEPTH (the
    decoder itself recurses, so a 100,000-deep body fails there first; both are a 400).
    """
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ValidationError(field, "not UTF-8") from None
    except RecursionError:
        raise ValidationError(field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ValidationError(field, f"not valid JSON ({str(exc)[:80]})") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValidationError(field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def parse_flag(value: Any, field: str) -> int | None:
    """A 0/1 flag from JSON (0, 1, true, false) or a form ("0", "1"); None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise ValidationError(field, "expected 0 or 1")


def blank_to_none(value: Any) -> Any:
    # Form bodies cannot carry null: an empty string stands for "not given".
    return None if value in ("", None, "None", "null") else value


class Params:
    """Parameters of one request, from the query string, a form body or a JSON body."""

    def __init__(self, req):
        self._json: dict[str, Any] | None = None
        self._form = None
        if req.method == "GET":
            self._form = req.args
        elif req.is_json:
            body = parse_json_body(req.get_data())
            if isinstance(body, list):
                body = {"transfers": body}
            if not isinstance(body, dict):
                raise ValidationError("body", "expected a JSON object")
            self._json = body
        else:
            self._form = req.form
        self.args = req.args

    def get(self, name: str, default: Any = None, required: bool = False) -> Any:
        if self._json is not None:
            value = self._json.get(name, self.args.get(name, default))
        else:
            value = self._form.get(name, self.args.get(name, default))
        if required and value in (None, ""):
            raise ValidationError(name, "is required")
        return value

    def getlist(self, name: str) -> list[Any] | None:
        if self._json is not None:
            if name not in self._json:
                return None
            value = self._json[name]
            if isinstance(value, str):
                # CRAB clients sometimes send a list as one comma-separated string
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValidationError(name, "expected a list")
            return value
        if name not in self._form and name not in self.args:
            return None
        return self._form.getlist(name) or self.args.getlist(name)

    def json_list(self, name: str) -> list[Any]:
        if self._json is None:
            raise ValidationError(name, "send a JSON body for this call")
        value = self._json.get(name)
        if not isinstance(value, list):
            raise ValidationError(name, "expected a JSON list")
        return value

    def integer(self, name: str, default: int | None = None, required: bool = False) -> int | None:
        value = self.get(name, default, required)
        if value is None or (value == "" and not required):
            return default
        return validate.non_negative_int(value, name)
