"""docs/asyncapi.yaml: it is AsyncAPI 3.0.0, every $ref resolves inside it, it names exactly the messages
and error codes of the market-data API v1 (the consumer's SERVER_MESSAGE_TYPES, the docs' error table),
and every example in it, and every complete JSON example in docs/websocket-api.md, fits its schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from marketdata.api.channels import book_checksum

DOCS = Path(__file__).resolve().parent.parent / "docs"
CLIENT_OPS = {"auth", "subscribe", "unsubscribe", "resume", "ping"}
URI = "urn:livefolio:asyncapi"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def v1_section() -> str:
    """The `/ws/v1/market` section of docs/websocket-api.md, up to the next `## ` heading."""
    text = (DOCS / "websocket-api.md").read_text()
    start = text.index("## `/ws/v1/market`")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


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


def const(doc: dict[str, Any], message: dict[str, Any], field: str) -> Any:
    """The `const` of one property of a message's payload schema (None when it has none)."""
    payload = deref(doc, deref(doc, message)["payload"])
    return deref(doc, payload.get("properties", {}).get(field, {})).get("const")


def operation_messages(doc: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [deref(doc, ref) for op in doc["operations"].values() if op["action"] == action for ref in op["messages"]]


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


def test_it_is_an_asyncapi_3_document_of_the_v1_endpoint(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert {"asyncapi", "info", "servers", "channels", "operations", "components"} <= doc.keys()
    assert {"title", "version"} <= doc["info"].keys()
    assert {"messages", "schemas", "securitySchemes"} <= doc["components"].keys()
    [server] = doc["servers"].values()
    assert (server["protocol"], server["host"], server["pathname"]) == ("ws", "localhost:8000", "/ws/v1/market")
    security = [deref(doc, scheme) for scheme in server["security"]]
    assert {"type": "httpApiKey", "in": "cookie"}.items() <= security[0].items()  # the session
    assert "auth" in security[1]["description"]  # the token, sent in the auth frame
    for channel in doc["channels"].values():
        assert channel["address"] == "/ws/v1/market"
        assert channel["messages"]
    for code in (1000, 1001, 1006, 4009, 4401, 4408, 4409, 4429):
        assert str(code) in doc["info"]["description"], code


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
    from marketdata.api.consumer import SERVER_MESSAGE_TYPES

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


def test_every_message_is_either_a_client_or_a_server_frame(doc: dict[str, Any]) -> None:
    for name, message in doc["components"]["messages"].items():
        has_op, has_type = const(doc, message, "op") is not None, const(doc, message, "type") is not None
        assert has_op != has_type, name
        assert const(doc, message, "op" if has_op else "type") == name  # keyed by what it is on the wire


def test_the_error_codes_are_the_docs_error_table(doc: dict[str, Any]) -> None:
    section = v1_section()
    table = section[section.index("| code | meaning | closes |") :].split("\n\n", 1)[0]
    codes = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert len(codes) >= 10
    enum = doc["components"]["schemas"]["ErrorCode"]["enum"]
    assert sorted(enum) == sorted(codes) and len(enum) == len(set(enum))
    error = doc["components"]["messages"]["error"]
    assert deref(doc, deref(doc, error["payload"])["properties"]["code"]) is doc["components"]["schemas"]["ErrorCode"]


def test_every_example_fits_its_messages_schema(doc: dict[str, Any]) -> None:
    count = 0
    for name, message in doc["components"]["messages"].items():
        assert message.get("examples"), f"{name} has no example"
        check = validator(doc, payload_pointer(doc, name))
        for example in message["examples"]:
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(example["payload"])]
            assert not errors, f"{name} example {example.get('name')!r}: {errors}"
            count += 1
    assert count >= 15


def test_the_schemas_refuse_what_the_docs_refuse(doc: dict[str, Any]) -> None:
    subscribe = validator(doc, payload_pointer(doc, "subscribe"))
    assert subscribe.is_valid({"op": "subscribe", "channels": ["candles:BTC-USD@1m", "portfolio:12", "portfolio"]})
    for bad in (["tickr:BTC-USD"], ["book:BTC-USD@depth=5"], ["candles:BTC-USD@5m"], "ticker:BTC-USD", [1]):
        assert not subscribe.is_valid({"op": "subscribe", "channels": bad}), bad
    assert not subscribe.is_valid({"op": "subscribe", "channels": [], "throttle_ms": 60001})
    resumed = validator(doc, payload_pointer(doc, "resumed"))
    assert not resumed.is_valid({"type": "resumed", "ch": "ticker:X", "recovered": True, "epoch": "1", "seq": 3})  # no from_seq
    error = validator(doc, payload_pointer(doc, "error"))
    assert not error.is_valid({"type": "error", "code": "teapot", "message": "no"})


def test_the_docs_complete_json_examples_fit_the_schemas(doc: dict[str, Any]) -> None:
    """Every frame in the v1 section that parses as JSON (inline or as a block) fits the message it names."""
    section = v1_section()
    candidates = re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL)
    candidates += re.findall(r"`(\{[^`]*\})`", section)
    candidates += [line for block in re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL) for line in block.splitlines()]
    checked = set()
    for text in candidates:
        try:
            frame = json.loads(text)
        except json.JSONDecodeError:
            continue  # elided with `...` or `…`
        if not isinstance(frame, dict) or not (name := frame.get("type") or frame.get("op")):
            continue
        errors = [e.message for e in validator(doc, payload_pointer(doc, name)).iter_errors(frame)]
        assert not errors, f"{text}: {errors}"
        checked.add(name)
    assert {"hello", "auth", "authenticated", "subscribe", "resume", "ping", "pong", "error"} <= checked


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
