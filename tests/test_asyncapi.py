"""docs/asyncapi.yaml: it is AsyncAPI 3.0.0, every $ref resolves inside it, it names exactly the messages
and error codes of the market-data API v1 (the consumer's SERVER_MESSAGE_TYPES, the docs' error table) and of
the dashboard's `/ws/portfolio/` stream, every example in it (and every complete JSON example in
docs/websocket-api.md) fits its schema with no property the schema does not name, frames the code itself builds
and sends fit it too, its names stay unique for code generators, and the official parser finds no error in it."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from channels.db import database_sync_to_async
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from marketdata.api.channels import book_checksum, channel_parse
from marketdata.api.consumer import SERVER_MESSAGE_TYPES
from marketdata.api.limits import merge
from marketdata.delivery import streams
from marketdata.delivery.history import market_store
from marketdata.events import PriceUpdate, Quote
from marketdata.services import token_create
from marketdata.worker.market import ticker_data
from portfolio import services
from portfolio.live import LiveBook
from portfolio.models import Portfolio
from tests.conftest import T0, record
from tests.marketdata.api.test_consumer import Client
from tests.marketdata.api.test_consumer import connect as market_connect
from tests.marketdata.worker.test_market import T0 as MARKET_T0
from tests.marketdata.worker.test_market import Window, delta, ms, snapshot, trade
from tests.portfolio.test_consumers import price as dashboard_price
from tests.portfolio.test_consumers import stream as dashboard_stream
from tests.portfolio.test_live import START, ledgers, market

DOCS = Path(__file__).resolve().parent.parent / "docs"
CLIENT_OPS = {"auth", "subscribe", "unsubscribe", "resume", "ping"}
DASHBOARD_SERVER_TYPES = {"snapshot", "update", "pong", "alert", "error"}
DASHBOARD_CLIENT_TYPES = {"ping", "view"}
URI = "urn:livefolio:asyncapi"
# The official parser (JavaScript), run when node and npm are there; installed once into the system's temp dir.
PARSER_VERSION = "3.6.6"
D = Decimal
Frame = dict[str, Any]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def section(heading: str) -> str:
    """One `## ` section of docs/websocket-api.md, from its heading up to the next one."""
    text = (DOCS / "websocket-api.md").read_text()
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def v1_section() -> str:
    return section("`/ws/v1/market`")


def dashboard_section() -> str:
    return section("`/ws/portfolio/`")


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer (`#/a/b`) names, or KeyError/IndexError."""
    assert ref.startswith("#/"), f"{ref!r} points outside the document"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def refs(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    """Every ($ref value, where it is) in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value, path
            else:
                yield from refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from refs(value, f"{path}/{i}")


def consts(doc: dict[str, Any], schema: Any, field: str) -> set[Any]:
    """The `const`s one property takes in a schema, through `oneOf` branches (one per kind of channel)."""
    schema = deref(doc, schema)
    if "oneOf" in schema and "properties" not in schema:
        return set().union(*(consts(doc, branch, field) for branch in schema["oneOf"]))
    return {deref(doc, schema.get("properties", {}).get(field, {})).get("const")}


def const(doc: dict[str, Any], message: dict[str, Any], field: str) -> Any:
    """The `const` of one property of a message's payload (None when it has none); every branch agrees on it."""
    found = consts(doc, deref(doc, message)["payload"], field)
    assert len(found) == 1, f"the branches of a payload disagree on {field}: {found}"
    return found.pop()


def channel_messages(doc: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    """A channel's messages by their key in the channel, dereferenced."""
    return {key: deref(doc, ref) for key, ref in doc["channels"][channel]["messages"].items()}


def operation_messages(doc: dict[str, Any], action: str, channel: str = "market") -> list[dict[str, Any]]:
    return [
        deref(doc, ref)
        for op in doc["operations"].values()
        if op["action"] == action and op["channel"]["$ref"] == f"#/channels/{channel}"
        for ref in op["messages"]
    ]


def validator(doc: dict[str, Any], pointer: str) -> Draft7Validator:
    """A JSON Schema (draft 7) validator for the schema at `pointer`, its $refs resolved inside the document."""
    registry: Registry[Any] = Registry().with_resource(URI, Resource.from_contents(doc, default_specification=DRAFT7))
    schema = {"$ref": f"{URI}{pointer}"}
    Draft7Validator.check_schema(resolve(doc, pointer))
    return Draft7Validator(schema, registry=registry)


def payload_pointer(doc: dict[str, Any], name: str) -> str:
    """Where the payload schema of components.messages[name] is."""
    payload = doc["components"]["messages"][name]["payload"]
    return str(payload["$ref"]) if "$ref" in payload else f"#/components/messages/{name}/payload"


def problems(check: Draft7Validator, instance: Any) -> list[str]:
    """Why `instance` does not fit: each error, and for a `oneOf` (a frame of no kind) the most telling reason inside it."""
    out = []
    for error in check.iter_errors(instance):
        where = "/".join(map(str, error.absolute_path)) or "(frame)"
        deepest = best_match(error.context) if error.context else None
        reason = f" — {'/'.join(map(str, deepest.absolute_path))}: {deepest.message}" if deepest is not None else ""
        out.append(f"{where}: {error.message[:200]}{reason}")
    return out


def objects_in(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path to every JSON object in a value, the value itself first."""
    if isinstance(value, dict):
        yield path
        for key, item in value.items():
            yield from objects_in(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from objects_in(item, (*path, i))


def with_unknown_property(value: Any, path: tuple[Any, ...]) -> Any:
    changed = copy.deepcopy(value)
    node = changed
    for step in path:
        node = node[step]
    node["x_not_in_the_schema"] = 1
    return changed


def strict_problems(check: Draft7Validator, instance: Any) -> list[str]:
    """`problems`, and every object in the instance at which the schema would take a property it does not name."""
    found = problems(check, instance)
    for path in objects_in(instance):
        if check.is_valid(with_unknown_property(instance, path)):
            found.append(f"{'/'.join(map(str, path)) or '(frame)'}: an unknown property would be accepted here")
    return found


def schema_nodes(node: Any, path: str, *, constraint: bool = False) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every schema inside a schema (not through $refs), and whether it only constrains another (if/then/else/not)."""
    if not isinstance(node, dict) or "$ref" in node:
        return
    yield path, node, constraint
    for key in ("properties", "patternProperties"):
        for name, sub in node.get(key, {}).items():
            yield from schema_nodes(sub, f"{path}/{key}/{name}", constraint=constraint)
    for key in ("additionalProperties", "additionalItems", "propertyNames", "contains"):
        yield from schema_nodes(node.get(key), f"{path}/{key}", constraint=constraint)
    items = node.get("items")
    for i, sub in enumerate(items) if isinstance(items, list) else [(None, items)]:
        yield from schema_nodes(sub, f"{path}/items" + ("" if i is None else f"/{i}"), constraint=constraint)
    for key in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(node.get(key, [])):
            yield from schema_nodes(sub, f"{path}/{key}/{i}", constraint=constraint)
    for key in ("if", "then", "else", "not"):
        yield from schema_nodes(node.get(key), f"{path}/{key}", constraint=True)


def all_schema_nodes(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    for name, schema in doc["components"]["schemas"].items():
        yield from schema_nodes(schema, f"#/components/schemas/{name}")
    for name, message in doc["components"]["messages"].items():
        yield from schema_nodes(message["payload"], f"#/components/messages/{name}/payload")


def is_object(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    return "properties" in schema or kinds == "object" or (isinstance(kinds, list) and "object" in kinds)


def makes_a_model(schema: dict[str, Any]) -> bool:
    """What a generator turns into a named type of its own: an object, an enum, or a union (a nullable one too: Java)."""
    enum = [value for value in schema.get("enum", []) if value is not None]
    return is_object(schema) or len(enum) > 1 or "oneOf" in schema or "anyOf" in schema


def generated_name(name: str) -> str:
    """A name as a generator would make a class or function name of it: letters and digits, any case."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def frame_checker(doc: dict[str, Any], channel: str, *, strict: bool = False) -> Any:
    """check(frame) → problems: a frame sent on `channel`, against the message its `type` names there (`strict`:
    and no object in it would take an unknown property; the schemas are closed, so a frame with one fails anyway)."""
    checks = {key: validator(doc, deref(doc, ref)["payload"]["$ref"]) for key, ref in doc["channels"][channel]["messages"].items()}

    def check(frame: Frame) -> list[str]:
        kind = frame.get("type")
        if kind not in checks:
            return [f"no message of type {kind!r} on {channel}"]
        return (strict_problems if strict else problems)(checks[kind], frame)

    return check


# ------------------------------------------------------------------ the document's shape


def test_it_is_an_asyncapi_3_document_of_both_endpoints(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert {"asyncapi", "info", "servers", "channels", "operations", "components"} <= doc.keys()
    assert {"title", "version"} <= doc["info"].keys()
    assert {"messages", "schemas", "securitySchemes"} <= doc["components"].keys()
    servers, channels = doc["servers"], doc["channels"]
    assert set(servers) == set(channels) == {"market", "dashboard"}
    for name, server in servers.items():
        # The path is the channel's address: a server pathname would be put in front of it.
        assert (server["protocol"], server["host"], server.get("pathname")) == ("ws", "localhost:8000", None), name
        assert [ref["$ref"] for ref in channels[name]["servers"]] == [f"#/servers/{name}"]
        assert channels[name]["messages"]
    assert (channels["market"]["address"], channels["dashboard"]["address"]) == ("/ws/v1/market", "/ws/portfolio/")
    security = {name: [deref(doc, scheme) for scheme in server["security"]] for name, server in servers.items()}
    assert {"type": "httpApiKey", "in": "cookie"}.items() <= security["market"][0].items()  # the session
    assert "auth" in security["market"][1]["description"]  # the token, sent in the auth frame
    assert security["dashboard"] == security["market"][:1]  # browsers only: no token
    for code in (1000, 1001, 1006, 4009, 4401, 4408, 4409, 4429):
        assert str(code) in doc["info"]["description"], code
    assert "4401" in channels["dashboard"]["description"]


def test_every_ref_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert len(found) > 50
    for ref, where in found:
        try:
            resolve(doc, ref)
        except (KeyError, IndexError, ValueError, TypeError):
            pytest.fail(f"{where}: $ref {ref!r} does not resolve")


def test_operations_use_their_channels_messages_and_every_message_has_one(doc: dict[str, Any]) -> None:
    # AsyncAPI 3: an operation's (and its reply's) messages are a subset of its channel's.
    used = set()
    for name, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), name
        for part in (op, op.get("reply")):
            if part is None:
                continue
            channel = part["channel"]["$ref"]
            for message in part["messages"]:
                assert message["$ref"].startswith(f"{channel}/messages/"), (name, message)
                used.add(message["$ref"])
    for channel_name, channel in doc["channels"].items():
        for message in channel["messages"]:
            assert f"#/channels/{channel_name}/messages/{message}" in used, f"{message} is in no operation"


def test_server_messages_carry_a_type_const_and_are_exactly_the_consumers(doc: dict[str, Any]) -> None:
    types = [const(doc, message, "type") for message in operation_messages(doc, "send")]
    assert None not in types, "a message the server sends has no `type` const"
    assert set(types) == set(SERVER_MESSAGE_TYPES)


def test_the_server_messages_are_those_the_docs_show(doc: dict[str, Any]) -> None:
    shown = set(re.findall(r'"type": "(\w+)"', v1_section()))
    assert {const(doc, message, "type") for message in operation_messages(doc, "send")} == shown


def test_client_messages_carry_an_op_const_and_are_the_five_ops(doc: dict[str, Any]) -> None:
    received = operation_messages(doc, "receive")
    ops = [const(doc, message, "op") for message in received]
    assert None not in ops, "a message the server receives has no `op` const"
    assert set(ops) == CLIENT_OPS == set(re.findall(r'"op": "(\w+)"', v1_section()))
    for message in received:
        assert const(doc, message, "type") is None


def test_the_dashboard_messages_are_those_its_docs_show(doc: dict[str, Any]) -> None:
    text = dashboard_section()
    server, client = text.split("### Client → server")
    sent = {const(doc, message, "type") for message in operation_messages(doc, "send", "dashboard")}
    received = {const(doc, message, "type") for message in operation_messages(doc, "receive", "dashboard")}
    assert sent == DASHBOARD_SERVER_TYPES == set(re.findall(r'"type": "(\w+)"', server)) | {"pong"}
    assert "`pong` answers" in server
    assert received == DASHBOARD_CLIENT_TYPES == set(re.findall(r'"type": "(\w+)"', client))


def test_every_message_is_keyed_by_what_it_is_on_the_wire(doc: dict[str, Any]) -> None:
    for channel in doc["channels"]:
        for key, message in channel_messages(doc, channel).items():
            has_op, has_type = const(doc, message, "op") is not None, const(doc, message, "type") is not None
            assert has_op != has_type, (channel, key)
            assert const(doc, message, "op" if has_op else "type") == key, (channel, key)
    # The market API's messages are found by their wire name (tests/test_market_client.py does so).
    for key, ref in doc["channels"]["market"]["messages"].items():
        assert ref["$ref"] == f"#/components/messages/{key}"


def error_table(text: str, header: str) -> list[str]:
    table = text[text.index(header) + len(header) :].split("\n\n", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)


def test_the_error_codes_are_the_docs_error_tables(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    codes = error_table(v1_section(), "| code | meaning | closes |")
    assert len(codes) >= 10
    enum = schemas["ErrorCode"]["enum"]
    assert sorted(enum) == sorted(codes) and len(enum) == len(set(enum))
    error = doc["components"]["messages"]["error"]
    assert deref(doc, deref(doc, error["payload"])["properties"]["code"]) is schemas["ErrorCode"]
    dashboard = error_table(dashboard_section(), "| `code` | meaning |")
    assert sorted(schemas["DashboardErrorCode"]["enum"]) == sorted(dashboard) and len(dashboard) == 3
    error = doc["components"]["messages"]["dashboardError"]
    assert deref(doc, deref(doc, error["payload"])["properties"]["code"]) is schemas["DashboardErrorCode"]


# ------------------------------------------------------------------ examples and schemas


def test_every_example_fits_its_messages_schema_and_nothing_else(doc: dict[str, Any]) -> None:
    count = 0
    for name, message in doc["components"]["messages"].items():
        assert message.get("examples"), f"{name} has no example"
        check = validator(doc, payload_pointer(doc, name))
        for example in message["examples"]:
            assert example.get("name"), f"{name} has an example without a name"
            errors = strict_problems(check, example["payload"])
            assert not errors, f"{name} example {example['name']!r}: {errors}"
            count += 1
    assert count >= 30


def test_every_kind_of_channel_has_a_snapshot_and_an_update_example(doc: dict[str, Any]) -> None:
    for name in ("snapshot", "update"):
        kinds = {channel_parse(e["payload"]["ch"]).kind for e in doc["components"]["messages"][name]["examples"]}
        assert kinds == {"ticker", "trades", "candles", "book", "portfolio"}, name


def test_every_object_schema_is_closed(doc: dict[str, Any]) -> None:
    """Each object names what else it takes (`additionalProperties`): nothing, or a map's values."""
    for path, schema, constraint in all_schema_nodes(doc):
        if is_object(schema) and not constraint:
            assert "additionalProperties" in schema, f"{path} is open: give it additionalProperties"


def test_the_schemas_refuse_what_the_docs_refuse(doc: dict[str, Any]) -> None:
    subscribe = validator(doc, payload_pointer(doc, "subscribe"))
    assert subscribe.is_valid({"op": "subscribe", "channels": ["candles:BTC-USD@1m", "portfolio:12", "portfolio"]})
    assert subscribe.is_valid(
        {"op": "subscribe", "channels": ["ticker:BTC-USD?session=day1", "book:EUR/USD@depth=1?session=2025-11-03_fx"]}
    )
    for bad in (["tickr:BTC-USD"], ["book:BTC-USD@depth=5"], ["candles:BTC-USD@5m"], "ticker:BTC-USD", [1], ["portfolio:0"]):
        assert not subscribe.is_valid({"op": "subscribe", "channels": bad}), bad
    for bad_session in ("?session=Day1", "?session=", "?s=day1", "?session=day1&x", "?session=" + "a" * 33):
        assert not subscribe.is_valid({"op": "subscribe", "channels": [f"ticker:BTC-USD{bad_session}"]}), bad_session
    assert not subscribe.is_valid({"op": "subscribe", "channels": ["portfolio?session=day1"]})
    assert not subscribe.is_valid({"op": "subscribe", "channels": [], "throttle_ms": 60001})
    resumed = validator(doc, payload_pointer(doc, "resumed"))
    assert not resumed.is_valid({"type": "resumed", "ch": "ticker:X", "recovered": True, "epoch": "1", "seq": 3})  # no from_seq
    error = validator(doc, payload_pointer(doc, "error"))
    assert not error.is_valid({"type": "error", "code": "teapot", "message": "no"})
    assert error.is_valid({"type": "error", "code": "auth_locked", "message": "later", "retry_after": 60})
    assert not error.is_valid({"type": "error", "code": "auth_locked", "message": "later"})  # says when
    assert not error.is_valid({"type": "error", "code": "auth_failed", "message": "no", "retry_after": 60})

    snapshot, update = validator(doc, payload_pointer(doc, "snapshot")), validator(doc, payload_pointer(doc, "update"))
    ticker = {"last": "1", "bid": None, "ask": None, "ref": None, "change": None, "change_pct": None, "replay": False}
    head = {"type": "update", "epoch": "e1", "seq": 2, "ts": 1}
    assert update.is_valid({**head, "ch": "ticker:X", "data": ticker})
    assert not update.is_valid({**head, "ch": "ticker:X", "data": {k: v for k, v in ticker.items() if k != "replay"}})
    assert not update.is_valid({**head, "ch": "book:X@depth=10", "data": ticker})  # data of another kind of channel
    assert not update.is_valid({**head, "ch": "ticker:X", "data": {**ticker, "last": "1.50"}})  # one spelling per value
    assert not update.is_valid({**head, "ch": "ticker:X", "data": {}})  # `{}` is a snapshot's, before any data
    assert not update.is_valid({**head, "ch": "portfolio", "data": {"portfolios": [{"id": 1}]}})
    assert not update.is_valid({**head, "ch": "portfolio", "first_seq": 1, "data": {"portfolios": []}})
    empty = {"type": "snapshot", "epoch": "", "seq": 0, "ts": 0}
    assert snapshot.is_valid({**empty, "ch": "ticker:X", "data": {}})
    book = {"bids": [], "asks": [], "checksum": 0, "state": "none", "update_id": None}
    assert snapshot.is_valid({**empty, "ch": "book:X@depth=1", "data": book})
    assert not snapshot.is_valid({**empty, "ch": "book:X@depth=1", "data": {**book, "state": "lost"}})
    assert not snapshot.is_valid({**empty, "ch": "book:X@depth=1", "data": {"bids": [["1", "0"]], "asks": [], "checksum": 0}})
    assert not snapshot.is_valid({**empty, "ch": "trades:X", "data": {}})


def test_the_docs_complete_json_examples_fit_the_schemas(doc: dict[str, Any]) -> None:
    """Every frame in the two sections that parses as JSON (inline or as a block) fits the message it names there."""

    def frames(text: str) -> Iterator[tuple[str, Frame]]:
        blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
        candidates = [*blocks, *re.findall(r"`(\{[^`]*\})`", text), *(line for block in blocks for line in block.splitlines())]
        for candidate in candidates:
            try:
                frame = json.loads(candidate)
            except json.JSONDecodeError:
                continue  # elided with `...` or `…`
            if isinstance(frame, dict) and (frame.get("type") or frame.get("op")):
                yield candidate, frame

    checked = set()
    for text, frame in frames(v1_section()):
        name = frame.get("type") or frame["op"]
        errors = strict_problems(validator(doc, payload_pointer(doc, name)), frame)
        assert not errors, f"{text}: {errors}"
        checked.add(name)
    assert {"hello", "auth", "authenticated", "subscribe", "resume", "ping", "pong", "error"} <= checked
    check = frame_checker(doc, "dashboard", strict=True)
    shown = set()
    for text, frame in frames(dashboard_section()):
        assert not check(frame), f"{text}: {check(frame)}"
        shown.add(frame["type"])
    assert {"error", "ping", "view"} <= shown


def test_the_book_examples_checksums_follow_the_documented_algorithm(doc: dict[str, Any]) -> None:
    def book_of(examples: list[dict[str, Any]], ch: str) -> dict[str, Any]:
        [payload] = [e["payload"] for e in examples if e["payload"]["ch"] == ch]
        return dict(payload)

    messages = doc["components"]["messages"]
    snapshot = book_of(messages["snapshot"]["examples"], "book:BTC-USD@depth=10")
    update = book_of(messages["update"]["examples"], "book:BTC-USD@depth=10")
    levels = {side: {Decimal(p): q for p, q in snapshot["data"][side]} for side in ("bids", "asks")}

    def checksum() -> int:
        bids = sorted(((p, Decimal(q)) for p, q in levels["bids"].items()), reverse=True)
        asks = sorted((p, Decimal(q)) for p, q in levels["asks"].items())
        return book_checksum(bids, asks)

    assert checksum() == snapshot["data"]["checksum"]
    assert update["first_seq"] == snapshot["seq"] + 1
    for side in ("bids", "asks"):
        for price, qty in update["data"][side]:
            if Decimal(qty) == 0:
                del levels[side][Decimal(price)]
            else:
                levels[side][Decimal(price)] = qty
    assert checksum() == update["data"]["checksum"]


# ------------------------------------------------------------------ names for code generators


def test_every_schema_and_message_has_a_stable_name_unique_for_generators(doc: dict[str, Any]) -> None:
    """Generators (Modelina and others) name a class after a schema's title or a message's name; anonymous
    schemas get numbered names that change with every edit, and names equal but for case or punctuation clash."""
    components = doc["components"]
    for key, schema in components["schemas"].items():
        assert schema.get("title") == key, f"schema {key} needs `title: {key}`"
    for key, message in components["messages"].items():
        assert message.get("name") == key, f"message {key} needs `name: {key}`"
        assert message.get("title"), f"message {key} has no title"
        assert "$ref" in message["payload"], f"message {key}: its payload is a named schema"
    titled = []
    for path, schema, constraint in all_schema_nodes(doc):
        if constraint:
            continue
        if makes_a_model(schema):
            assert schema.get("title"), f"{path} becomes a type of its own in generated code: give it a title (or make it a component)"
        if "title" in schema:
            titled.append(schema["title"])
    # Modelina also makes a model of each channel: the union of its messages' payloads, named after the channel.
    names = [*titled, *(message["name"] for message in components["messages"].values()), *doc["channels"]]
    for group in (names, [m["title"] for m in components["messages"].values()], list(doc["operations"])):
        seen: dict[str, str] = {}
        for name in group:
            assert generated_name(name), f"{name!r} has no letter or digit"
            assert generated_name(name) not in seen, f"{name!r} and {seen.get(generated_name(name))!r} make the same generated name"
            seen[generated_name(name)] = name


# ------------------------------------------------------------------ what the code builds and sends


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else D(text)


def market_windows(session: str = "") -> list[dict[str, list[Frame]]]:
    """The feed worker's messages for BTC-USD over four windows: every kind of market channel, a closed minute
    (of a replay session's channels, with `session`)."""
    w = Window(session=session)
    book = snapshot("BTC-USD", (("99", "1"), ("98.5", "2.50")), (("101", "1"),), at=1)
    windows = [
        w(book, trade("BTC-USD", "100", at=2, size="0.5"), trade("BTC-USD", "100.5", at=3, size="0.25", side=None)),
        w(delta("BTC-USD", bids=(("99", "0"), ("99.5", "3")), at=4), Quote("BTC-USD", ms(5), D("99.5"), D("101"), "test")),
        w(delta("BTC-USD", asks=(("101", "0.125"),), at=6), trade("BTC-USD", "101", at=7)),
    ]
    w.close_minute(MARKET_T0)
    windows.append(w(trade("BTC-USD", "102", at=61_000), delta("BTC-USD", asks=(("100.75", "4"),), at=61_001)))
    return windows


def test_the_market_and_portfolio_frames_the_code_builds_fit_the_document(doc: dict[str, Any]) -> None:
    update = validator(doc, payload_pointer(doc, "update"))
    snapshot_check = validator(doc, payload_pointer(doc, "snapshot"))
    dashboard = frame_checker(doc, "dashboard")
    # Market channels: the worker's messages, and throttled merges of consecutive ones.
    last: dict[str, Frame] = {}
    for window in market_windows() + market_windows(session="day1"):
        for message in (m for messages in window.values() for m in messages):
            assert not (errors := problems(update, {"type": "update", **message})), (message, errors)
            if message["ch"] in last:
                merged = merge(channel_parse(message["ch"]).kind, last[message["ch"]], message)
                assert not (errors := problems(update, {"type": "update", **merged})), (merged, errors)
            last[message["ch"]] = message
    assert {channel_parse(ch).kind for ch in last} == {"ticker", "trades", "candles", "book"}
    assert {channel_parse(ch).session for ch in last} == {"", "day1"}
    # Ticker data with a reference, a zero reference, and from a replayed session.
    for reference, replay in ((D("87350"), False), (D(0), False), (D("99.9"), True)):
        tick = PriceUpdate("X", 1, "e1", D("87648.2"), D("87648.1"), None, ms(1), "test", 1, reference=reference, replay=replay)
        frame = {"type": "update", "ch": "ticker:X", "epoch": "e1", "seq": 1, "ts": 1, "data": ticker_data(tick)}
        assert not (errors := problems(update, frame)), (frame, errors)
    # Portfolios: two (so a combined view) in each view currency, one, none; snapshots, then updates as prices move.
    books = [LiveBook(ledgers(), market(START), currency=currency) for currency in ("USD", "EUR", "GBP")]
    books += [LiveBook(ledgers()[:1], market(START)), LiveBook([], market(START))]
    ticks = [("BTC-USD", "87648.2", "87350"), ("EUR/USD", "1.0825", None), ("GBP/USD", "1.27", "1.26"), ("SAP", "238.5", "240")]
    epoch, seen = uuid.uuid4().hex[:16], set()
    for book in books:
        frames = [book.snapshot()]
        for seq, (symbol, value, reference) in enumerate(ticks, start=2):
            at = T0 + timedelta(seconds=seq)
            book.apply(PriceUpdate(symbol, seq, "e", D(value), None, None, at, "test", 1, reference=_decimal(reference)))
            frames.append(book.take_changes() or book.snapshot())
        for seq, frame in enumerate(frames, start=1):
            assert not (errors := dashboard(frame)), (frame, errors)
            data = {key: value for key, value in frame.items() if key != "type"}
            wrapped = {"type": frame["type"], "ch": "portfolio", "epoch": epoch, "seq": seq, "ts": 1795262641223, "data": data}
            assert not (errors := problems(snapshot_check if frame["type"] == "snapshot" else update, wrapped)), (wrapped, errors)
            seen.add((frame["type"], frame.get("combined") is not None))
    assert seen == {("snapshot", True), ("snapshot", False), ("update", True), ("update", False)}


@pytest.fixture
def alice_two_portfolios(alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Any]) -> list[Portfolio]:
    """Alice's USD portfolio and a EUR one, so her views include the combined one."""
    euro = services.portfolio_create(owner_id=alice.pk, name="Alice euro", base_currency="EUR")
    record(euro, "deposit", "1000", executed_at=T0 - timedelta(days=1))
    record(euro, "buy", "2", instruments["SAP"], price="200")
    return [alice_portfolio, euro]


async def collect(ws: Client, frames: list[Frame], until: Any = None, quiet: float = 0.6) -> None:
    """Receive into `frames` until `until(frames)` holds, or (without it) until nothing but heartbeats came for `quiet` seconds."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while until is None or not until(frames):
        # A receive that times out cancels the application: wait for nothing first, which does not.
        if until is None and (loop.time() - last > quiet or await ws.nothing(quiet)):
            return
        frames.append(await ws.recv())
        if frames[-1]["type"] != "heartbeat":
            last = loop.time()


def batch_tickers(frames: list[Frame]) -> dict[str, Frame]:
    """The ticker snapshots of the last batch, as the next live ticker messages of their symbols (seq and ts moved on)."""
    out = {}
    for frame in frames[-1]["messages"]:
        if frame["type"] == "snapshot":
            symbol = channel_parse(frame["ch"]).symbol
            data = frame["data"] or {
                "last": "1",
                "bid": None,
                "ask": None,
                "ref": None,
                "change": None,
                "change_pct": None,
                "replay": False,
            }
            epoch = frame["epoch"] or "e-batch"
            out[symbol] = {"ch": frame["ch"], "epoch": epoch, "seq": frame["seq"], "ts": frame["ts"] + 1, "data": data}
    return out


async def publish(window: dict[str, list[Frame]]) -> None:
    """What the feed worker does with a window: history first, then live."""
    for symbol, messages in window.items():
        await market_store().append(messages)
        await streams.publish_market(symbol, messages)


@pytest.mark.django_db(transaction=True)
async def test_every_frame_the_market_api_sends_fits_the_document(
    doc: dict[str, Any], alice: Any, alice_two_portfolios: list[Portfolio], settings: Any
) -> None:
    settings.MARKET_WS_HEARTBEAT_SECONDS = 0.25
    check = frame_checker(doc, "market")
    first, *later = market_windows()
    await publish(first)
    frames: list[Frame] = []
    live = ["ticker:BTC-USD", "trades:BTC-USD", "candles:BTC-USD@1m", "book:BTC-USD@depth=1", "book:BTC-USD@depth=10"]
    never_seen = ["ticker:MSFT", "trades:MSFT", "candles:MSFT@1m", "book:MSFT@depth=50"]
    portfolios = ["portfolio", f"portfolio:{alice_two_portfolios[1].pk}"]
    async with market_connect(alice) as ws:
        frames.append(ws.hello)
        await ws.send({"op": "subscribe", "id": 1, "channels": live + never_seen + portfolios})
        await ws.send({"op": "subscribe", "id": "throttled", "channels": ["book:BTC-USD@depth=50"], "throttle_ms": 1000})
        expected = len(live + never_seen + portfolios) + 1
        await collect(ws, frames, lambda got: sum(f["type"] == "snapshot" for f in got) >= expected)
        for window in later:  # the first book update goes out at once, the next two are merged (first_seq)
            await publish(window)
        await collect(ws, frames, lambda got: any("first_seq" in frame for frame in got))
        await dashboard_price("SAP", "231", 1)  # revalues both portfolio channels
        for frame in (
            {"op": "ping", "id": 4},
            {"op": "unsubscribe", "id": 5, "channels": ["ticker:MSFT"]},
            {
                "op": "resume",
                "id": 6,
                "channels": {"ticker:BTC-USD": {"epoch": "e1", "seq": 1}, "trades:BTC-USD": {"epoch": "old", "seq": 9}},
            },
            {"op": "resume", "id": 7, "channels": {"portfolio": {"epoch": "0123456789abcdef", "seq": 3}}},
            {"op": "auth", "id": 8, "token": "lf_x"},  # bad_request: already signed in
            {"op": "subscribe", "id": 9, "channels": ["tickr:BTC-USD"]},
            {"op": "subscribe", "id": 10, "channels": ["ticker:NOPE"]},
            {"op": "subscribe", "id": 11, "channels": ["portfolio:999999999"]},
            {"op": "nope", "id": 12},
            "not json",
        ):
            await ws.send(frame)
        await ws.ws.send_to(bytes_data=b"\x00")
        await collect(ws, frames)
    _, token = await database_sync_to_async(token_create)(user=alice, name="asyncapi check")
    async with market_connect(origin=None) as bot:
        frames.append(bot.hello)
        await bot.send({"op": "auth", "id": "a", "token": token})
        await collect(bot, frames, lambda got: got[-1]["type"] == "authenticated")
        # Batch frames: the ack and snapshots of one subscribe, then a window's updates of two symbols.
        await bot.send({"op": "subscribe", "id": "b", "channels": ["ticker:BTC-USD", "ticker:AAPL"], "batch": True})
        await collect(bot, frames, lambda got: got[-1]["type"] == "batch")
        await publish({symbol: [dict(frame, seq=frame["seq"] + 1)] for symbol, frame in batch_tickers(frames).items()})
        await collect(bot, frames, lambda got: got[-1]["type"] == "batch" and got[-1]["messages"][0]["type"] == "update")
    for frame in frames:
        assert not (errors := check(frame)), (frame, errors)
    assert {frame["type"] for frame in frames} == set(SERVER_MESSAGE_TYPES)
    for kind in ("snapshot", "update"):
        kinds = {channel_parse(frame["ch"]).kind for frame in frames if frame["type"] == kind}
        assert kinds == {"ticker", "trades", "candles", "book", "portfolio"}, kind
    assert {frame["code"] for frame in frames if frame["type"] == "error"} == {
        "bad_request",
        "unknown_channel",
        "unknown_symbol",
        "forbidden",
        "unknown_op",
        "bad_json",
    }


@pytest.mark.django_db(transaction=True)
async def test_every_frame_the_dashboard_stream_sends_fits_the_document(
    doc: dict[str, Any], alice: Any, alice_two_portfolios: Any, instruments: dict[str, Any]
) -> None:
    check = frame_checker(doc, "dashboard")
    frames: list[Frame] = []
    await database_sync_to_async(services.watchlist_add)(user=alice, instrument=instruments["MSFT"])
    alert = await database_sync_to_async(services.alert_create)(
        user=alice, instrument=instruments["MSFT"], kind="price_above", threshold=Decimal("401")
    )
    async with dashboard_stream(alice) as ws:
        assert (await ws.connect())[0]
        client = Client(ws)
        await collect(client, frames, lambda got: len(got) == 1)
        for frame in (
            {"type": "ping"},
            {"type": "view", "currency": "EUR"},
            {"type": "view", "currency": "CHF"},
            {"type": "nope"},
            "not json",
        ):
            await client.send(frame)
        await ws.send_to(bytes_data=b"\x00")
        # Every answer first: a snapshot (the `view`'s) sent after the price would fold its change in.
        await collect(client, frames, lambda got: len(got) == 7)
        await dashboard_price("SAP", "231", 1)
        await dashboard_price("MSFT", "401.5", 1, reference="400")  # a watched symbol: the update's `watchlist`
        await database_sync_to_async(services.alert_fire)(alert_id=alert.pk, value=Decimal("401.5"), fired_at=T0)
        await collect(client, frames)
    assert any("watchlist" in frame for frame in frames if frame["type"] == "update")
    for frame in frames:
        assert not (errors := check(frame)), (frame, errors)
    assert {frame["type"] for frame in frames} == DASHBOARD_SERVER_TYPES
    assert {frame["code"] for frame in frames if frame["type"] == "error"} == {"bad_json", "unknown_message", "unknown_currency"}
    assert all(frame["combined"] is not None for frame in frames if frame["type"] == "snapshot")


# ------------------------------------------------------------------ the official parser

PARSE = """
import { Parser, fromFile } from '@asyncapi/parser';
const { document, diagnostics } = await fromFile(new Parser(), process.argv[2]).parse();
console.log(JSON.stringify({
  parsed: document !== undefined,
  diagnostics: diagnostics.map((d) => ({ severity: d.severity, code: d.code, path: d.path.join('.'), message: d.message })),
}));
"""


def official_parser() -> tuple[str, Path]:
    """node and a folder with @asyncapi/parser installed (once, into the system's temp dir); skips without them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the official AsyncAPI parser (@asyncapi/parser, Node.js 20) cannot run")
    home = Path(tempfile.gettempdir()) / f"livefolio-asyncapi-parser-{PARSER_VERSION}"
    if not (home / "node_modules" / "@asyncapi" / "parser" / "package.json").exists():
        building = Path(tempfile.mkdtemp(prefix="livefolio-asyncapi-parser-"))
        (building / "package.json").write_text('{"private": true, "type": "module"}\n')
        command = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error", f"@asyncapi/parser@{PARSER_VERSION}"]
        installed = subprocess.run(command, cwd=building, capture_output=True, text=True, timeout=300, check=False)
        if installed.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            pytest.skip(f"npm could not install @asyncapi/parser@{PARSER_VERSION}: {installed.stderr.strip()[-400:]}")
        try:
            os.rename(building, home)  # whole or not at all, should two runs install at once
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
    (home / "parse.mjs").write_text(PARSE)
    return node, home


def test_the_official_asyncapi_parser_finds_no_error_or_warning() -> None:
    node, home = official_parser()
    result = subprocess.run(
        [node, str(home / "parse.mjs"), str(DOCS / "asyncapi.yaml")], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    serious = [d for d in verdict["diagnostics"] if d["severity"] <= 1]  # 0 error, 1 warning (2 info, 3 hint)
    assert verdict["parsed"] and not serious, json.dumps(serious, indent=1)
