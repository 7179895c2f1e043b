"""The OpenAPI 3.0 document of the state server's REST API.

Built from :data:`aso.state.api.ROUTES` (which handler serves which subresource, and
for which roles) and :data:`aso.state.operations.OPERATIONS` (each subresource's
parameters and answer).
OpenAPI paths cannot differ by query string, so each (resource, method) is one operation:
``subresource`` is a parameter whose schema is the enum of that resource's subresources
for that method, and the operation's parameters are the union of its subresources'
(each optional; which a subresource needs is said in its description and in the
``x-aso-subresources`` extension, with the roles allowed to call it).

Where parameters go: GET takes them in the query string (lists as repeated keys); POST and
PUT in an ``application/json`` or ``application/x-www-form-urlencoded`` body (lists as
repeated keys; values that are lists of objects, such as ``transfers``, only in JSON).
The server also reads body parameters from the query string; the document does not say so,
to keep one place per parameter.

Served at ``GET /crabserver/<instance>/openapi.json`` to any authenticated caller.
"""

from __future__ import annotations

import copy
from typing import Any

from aso.state.api import ROUTES
from aso.state.operations import (
    METADATA_ENTRY,
    OPENAPI_VERSION,
    OPERATIONS,
    PARAMETERS,
    RESOURCES,
    TASK,
    TRANSFER_REQUEST,
    Operation,
    wire_name,
)

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "field": {"type": "string", "description": "the bad parameter (400)"},
        "problem": {"type": "string", "description": "what is wrong with it (400)"},
        "row": {"type": "string", "description": "the row whose state change was refused (409)"},
        "current": {"type": "string"},
        "requested": {"type": "string"},
        "kind": {"type": "string", "enum": ["transfer", "publication"]},
    },
}
ERROR_STATUSES = {
    "400": "bad input; nothing was changed",
    "401": "no valid bearer token",
    "403": "the caller's role may not call this subresource, or acts for another user",
    "404": "no such instance or resource",
    "409": "a state change the state machine refuses; nothing was changed",
    "413": "body larger than [server].max_body_bytes",
    "503": "the state database is unavailable",
}


def _error_responses(statuses: list[str]) -> dict[str, Any]:
    return {
        status: {"description": ERROR_STATUSES[status], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for status in statuses
    }


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}


def _any_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    unique: list[dict[str, Any]] = []
    for s in schemas:
        if s not in unique:
            unique.append(s)
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


def _form_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of a value in a form body (no null: an empty value means 'not given'),
    or None if it cannot be form-encoded (objects, lists of objects)."""
    schema = copy.deepcopy(schema)
    schema.pop("nullable", None)
    if "anyOf" in schema:
        strings = [s for s in schema["anyOf"] if s.get("type") == "string"]
        return {**strings[0], "description": schema.get("description", "")} if strings else None
    if schema.get("type") == "object":
        return None
    if schema.get("type") == "array":
        items = schema["items"]
        items.pop("nullable", None)
        if items.get("type") not in ("string", "integer"):
            return None
    return schema


def _subresource_doc(sub: str, op: Operation, handler: str, roles: frozenset[str]) -> dict[str, Any]:
    return {
        "summary": op.summary,
        "handler": handler,
        "roles": sorted(roles),
        "parameters": sorted({wire_name(n) for n in op.params}),
        "required": sorted({wire_name(n) for n, req in op.params.items() if req}),
        **({"notes": op.notes} if op.notes else {}),
    }


def _describe(subs: dict[str, dict[str, Any]]) -> str:
    lines = []
    for sub, d in subs.items():
        req = ", ".join(d["required"]) or "nothing"
        opt = ", ".join(p for p in d["parameters"] if p not in d["required"]) or "nothing"
        note = f" ({d['notes']})" if "notes" in d else ""
        lines.append(f"- `{sub or '(none)'}` [{', '.join(d['roles'])}]: {d['summary']}. Requires {req}; optional {opt}{note}.")
    return "\n".join(lines)


def _operation(resource: str, method: str, routes: dict) -> dict[str, Any]:
    subs = sorted(s for (r, m, s) in routes if r == resource and m == method)
    docs: dict[str, dict[str, Any]] = {}
    params: dict[str, dict[str, Any]] = {}  # wire name -> schema, in first-seen order
    descriptions: dict[str, str] = {}
    answers = []
    json_only = True
    list_body = None
    for sub in subs:
        handler, roles = routes[(resource, method, sub)]
        op = OPERATIONS[(resource, method, sub)]
        docs[sub] = _subresource_doc(sub, op, handler, roles)
        answers.append(op.answer.schema())
        json_only = json_only and op.json_only
        list_body = list_body or op.list_body
        for name in op.params:
            schema, description = PARAMETERS[name]
            key = wire_name(name)
            if key in params and params[key] != schema:
                raise ValueError(f"{resource} {method}: two schemas for parameter {key!r}")
            params.setdefault(key, schema)
            if description not in descriptions.setdefault(key, description):
                descriptions[key] += f"; or {description}"
    optional_sub = "" in subs
    sub_schema = {"type": "string", "enum": subs}
    roles_all = sorted({role for d in docs.values() for role in d["roles"]})
    doc: dict[str, Any] = {
        "operationId": f"{resource}_{method.lower()}",
        "summary": f"{method} {resource}: " + ", ".join(s or "(no subresource)" for s in subs),
        "description": f"Subresources (allowed roles in brackets):\n\n{_describe(docs)}",
        "tags": [resource],
        "x-aso-subresources": docs,
        "x-aso-roles": roles_all,
        "parameters": [{"$ref": "#/components/parameters/instance"}],
    }
    if method == "GET":
        doc["parameters"].append(
            {"name": "subresource", "in": "query", "required": not optional_sub, "schema": sub_schema,
             "description": "the call to make"})
        for key, schema in params.items():
            p: dict[str, Any] = {"name": key, "in": "query", "required": False, "schema": schema,
                                 "description": descriptions[key]}
            if schema.get("type") == "array":
                p.update(style="form", explode=True)
            doc["parameters"].append(p)
        statuses = ["400", "401", "403", "404", "503"]
    else:
        if optional_sub:
            # PUT has no subresource; the parameter is accepted (empty) for symmetry
            doc["parameters"].append(
                {"name": "subresource", "in": "query", "required": False, "schema": sub_schema,
                 "description": "none for this method: leave out or send empty"})
            required_props: list[str] = []
        else:
            required_props = ["subresource"]
        props = {"subresource": sub_schema} if not optional_sub else {}
        props.update(params)
        json_schema: dict[str, Any] = {"type": "object", "properties": props}
        if required_props:
            json_schema["required"] = required_props
        if list_body:
            json_schema = {"anyOf": [json_schema, PARAMETERS[list_body][0]]}
        content: dict[str, Any] = {"application/json": {"schema": json_schema}}
        if not json_only:
            form_props = {k: f for k, s in props.items() if (f := _form_schema(s)) is not None}
            form_schema: dict[str, Any] = {"type": "object", "properties": form_props}
            if required_props:
                form_schema["required"] = required_props
            encoding = {k: {"style": "form", "explode": True} for k, s in form_props.items() if s.get("type") == "array"}
            content["application/x-www-form-urlencoded"] = {"schema": form_schema, **({"encoding": encoding} if encoding else {})}
        doc["requestBody"] = {"required": not optional_sub, "content": content}
        statuses = ["400", "401", "403", "404", "409", "413", "503"]
    doc["responses"] = {**_ok(_any_of(answers)), **_error_responses(statuses)}
    return doc


def build_document(instance: str | None = None, routes: dict | None = None) -> dict[str, Any]:
    """The OpenAPI document; ``instance`` pins the <instance> path part if given."""
    if routes is None:
        routes = ROUTES
    missing = sorted(set(routes) - set(OPERATIONS))
    if missing:
        raise KeyError(f"routes with no entry in aso.state.operations.OPERATIONS: {missing}")
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "liveness (no authentication)",
                "security": [],
                "responses": _ok({
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok"]}},
                }),
            }
        },
        "/crabserver/{instance}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "this document (any authenticated caller)",
                "x-aso-roles": ["operator", "service", "user"],
                "parameters": [{"$ref": "#/components/parameters/instance"}],
                "responses": {
                    **_ok({"type": "object", "required": ["openapi", "paths"]}),
                    **_error_responses(["401", "404"]),
                },
            }
        },
    }
    for resource in RESOURCES:
        methods = sorted({m for (r, m, _s) in routes if r == resource})
        paths[f"/crabserver/{{instance}}/{resource}"] = {m.lower(): _operation(resource, m, routes) for m in methods}
    instance_schema: dict[str, Any] = {"type": "string", "pattern": "^[^/]+$"}
    if instance is not None:
        instance_schema = {"type": "string", "enum": [instance]}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "aso state server",
            "version": "1",
            "description": (
                "CRAB-compatible REST interface of `aso server`. Each resource takes a `subresource` "
                "naming the call; each call names the roles allowed to make it (x-aso-subresources). "
                "Reads answer a table {desc: {columns}, result: [[...]]}; writes answer {result: [{...}]}. "
                "String formats named aso-* are defined by the pattern next to them."
            ),
        },
        "security": [{"bearer": []}],
        "tags": [{"name": r} for r in RESOURCES],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "a token of [server].tokens"}},
            "parameters": {
                "instance": {"name": "instance", "in": "path", "required": True, "schema": instance_schema,
                             "description": "[aso].instance of the server"},
            },
            "schemas": {"Error": ERROR, "TransferRequest": TRANSFER_REQUEST, "Task": TASK, "MetadataEntry": METADATA_ENTRY},
        },
    }
