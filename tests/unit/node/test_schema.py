"""One definition per body: the OpenAPI document and the validation come from ``api.schema``
and agree (the drift an OpenAPI fuzzer found: valid requests refused, invalid ones taken)."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
import pytest

from dvecdb_node.api import schema
from dvecdb_node.api.openapi import openapi_document
from dvecdb_node.api.validation import parse_collection, parse_search, parse_upsert_json
from dvecdb_node.errors import NodeError
from dvecdb_node.replication.openapi import PATHS
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.records import CollectionConfig

pytestmark = pytest.mark.unit
SETTINGS = NodeSettings(max_batch=5, max_dimension=8, max_k=50, max_queries=3)
CONFIG = CollectionConfig("c", 3, "l2")


def _schemas(settings: NodeSettings = SETTINGS) -> dict[str, Any]:
    return openapi_document(settings, PATHS)["components"]["schemas"]  # type: ignore[no-any-return]


def _error(fn: Any, *args: Any) -> NodeError:
    with pytest.raises(NodeError) as info:
        fn(*args)
    return info.value


def test_the_document_states_the_node_limits_its_validation_enforces() -> None:
    schemas = _schemas()
    assert schemas["Upsert"]["properties"]["vectors"]["maxItems"] == 5
    assert schemas["Delete"]["properties"]["ids"]["maxItems"] == 5
    assert schemas["Search"]["properties"]["k"]["maximum"] == 50
    assert schemas["Search"]["properties"]["vectors"]["maxItems"] == 3
    assert schemas["CollectionCreate"]["properties"]["dimension"]["maximum"] == 8
    assert schemas["VectorItem"]["properties"]["vector"]["maxItems"] == 8
    assert _error(parse_search, {"vector": [1, 2, 3], "k": 51}, CONFIG, SETTINGS).status == 400
    many = {"vectors": [[1, 2, 3]] * 4}
    assert _error(parse_search, many, CONFIG, SETTINGS).code == "payload_too_large"
    assert _error(parse_collection, {"name": "c", "dimension": 9}, SETTINGS).status == 400


def test_unknown_fields_are_refused_and_the_document_says_so() -> None:
    schemas = _schemas()
    for name in ("CollectionCreate", "Hnsw", "Upsert", "VectorItem", "Delete", "Search"):
        assert schemas[name]["additionalProperties"] is False, name
    body = {"vector": [1, 2, 3], "extra": 1}
    assert _error(parse_search, body, CONFIG, SETTINGS).code == "invalid_input"


@pytest.mark.parametrize("hnsw", [None, [], 0, ""])
def test_hnsw_must_be_an_object(hnsw: Any) -> None:
    """``"hnsw": null`` was taken as no hnsw, though the document calls it invalid."""
    body = {"name": "c", "dimension": 3, "hnsw": hnsw}
    assert _error(parse_collection, body, SETTINGS).code == "invalid_input"
    assert "null" not in orjson.dumps(_schemas()["CollectionCreate"]["properties"]["hnsw"]).decode()


def test_an_empty_consistency_is_refused() -> None:
    """``""`` was read as the default, though it is not in the document's enum."""
    body = {"vector": [1, 2, 3], "consistency": ""}
    assert _error(parse_search, body, CONFIG, SETTINGS).code == "invalid_input"


def test_integers_written_with_a_zero_fraction_are_integers() -> None:
    """JSON Schema counts ``3.0`` as an integer: the document's ``integer`` fields take it."""
    req = parse_search(b'{"vector": [1, 2, 3], "k": 3.0, "min_seq": 4.0}', CONFIG, SETTINGS)
    assert (req.k, req.min_seq) == (3, 4) and isinstance(req.k, int)
    config = parse_collection({"name": "c", "dimension": 3.0, "hnsw": {"m": 8.0}}, SETTINGS)
    assert (config.dimension, config.hnsw.m) == (3, 8)
    assert _error(parse_search, {"vector": [1, 2, 3], "k": 3.5}, CONFIG, SETTINGS).status == 400


def test_json_bytes_and_decoded_values_are_validated_alike() -> None:
    good = {"vectors": [{"id": "a", "vector": [1, 2, 3], "metadata": {"g": 1}}], "ack": "one"}
    from_bytes, ack = parse_upsert_json(orjson.dumps(good), CONFIG, SETTINGS)
    from_value, _ = parse_upsert_json(good, CONFIG, SETTINGS)
    assert ack == "one" and from_bytes.ids == from_value.ids == ["a"]
    assert from_bytes.vectors.tolist() == from_value.vectors.tolist()
    bad = {"vectors": [{"id": "a", "vector": [1, True, 3]}]}
    codes = {_error(parse_upsert_json, b, CONFIG, SETTINGS).code for b in (bad, orjson.dumps(bad))}
    assert codes == {"invalid_vector"}


def test_float32_range_is_stated_as_validated() -> None:
    item = _schemas()["VectorItem"]["properties"]["vector"]["items"]
    bound = item["exclusiveMaximum"]
    assert bound == -item["exclusiveMinimum"] == schema.FLOAT32_BOUND
    below = math.nextafter(bound, 0)  # rounds to FLT_MAX, where the bound rounds to inf
    parse_search({"vector": [below, -below, 0]}, CONFIG, SETTINGS)
    assert _error(parse_search, {"vector": [bound, 0, 0]}, CONFIG, SETTINGS).code == "non_finite"


def test_admin_bodies_are_the_documented_types() -> None:
    schemas = _schemas()
    assert schemas["Promote"]["properties"]["members"]["anyOf"][0]["maximum"] == 1000
    assert schemas["Follow"]["properties"]["leader"]["pattern"] == "^https?://[^/]"
    for path, kind in (("/v1/admin/promote", "Promote"), ("/v1/replication/ack", "FollowerAck")):
        request_body = PATHS[path]["post"]["requestBody"]["content"]["application/json"]
        assert request_body["schema"] == {"$ref": f"#/components/schemas/{kind}"}
    refused = [
        (schema.Promote, b'{"epoch": 1, "members": 1001}', "invalid_input"),
        (schema.Promote, b'{"epoch": 9223372036854775808}', "invalid_epoch"),
        (schema.Follow, b'{"leader": "http://", "epoch": 1}', "invalid_leader"),
        # The ack handler took strings and floats through int() before.
        (schema.FollowerAck, b'{"node_id": "f", "epoch": "1", "received_seq": 1, '
                             b'"applied_seq": 1}', "invalid_input"),
        (schema.FollowerAck, b'{"node_id": "f", "epoch": 1, "received_seq": 1.5, '
                             b'"applied_seq": 1}', "invalid_input"),
    ]  # fmt: skip
    for kind, raw, code in refused:
        assert _error(schema.decode, kind, raw).code == code, raw


def test_who_may_call_follows_the_node_keys() -> None:
    open_doc = openapi_document(NodeSettings(), PATHS)
    assert "securitySchemes" not in open_doc["components"]
    assert all("security" not in op for op in open_doc["paths"]["/v1/collections"].values())
    keyed = openapi_document(NodeSettings(api_key="k", cluster_token="t"), PATHS)
    paths = keyed["paths"]
    assert paths["/v1/collections"]["get"]["security"] == [{"apiKey": []}, {"clusterToken": []}]
    assert paths["/v1/admin/fence"]["post"]["security"] == [{"clusterToken": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert {"401", "403"} <= set(paths["/v1/status"]["get"]["responses"])


def test_the_document_says_which_operations_a_read_only_key_opens() -> None:
    keys = NodeSettings(api_key="k", read_only_key="r", cluster_token="t")
    paths = openapi_document(keys, PATHS)["paths"]
    reads = [
        paths["/v1/collections"]["get"],
        paths["/v1/collections/{name}/search"]["post"],
        paths["/v1/collections/{name}/vectors/{id}"]["get"],
    ]
    writes = [
        paths["/v1/collections"]["post"],
        paths["/v1/collections/{name}/vectors"]["put"],
        paths["/v1/collections/{name}"]["delete"],
    ]
    assert all({"readOnlyKey": []} in op["security"] for op in reads)
    assert all({"readOnlyKey": []} not in op["security"] for op in writes)
    assert all({"apiKey": []} in op["security"] for op in reads + writes)


def test_path_parameters_carry_the_rules_the_handlers_check() -> None:
    paths = openapi_document(SETTINGS, PATHS)["paths"]
    name = paths["/v1/collections/{name}"]["parameters"][0]["schema"]
    assert name["pattern"] == schema.NAME_PATTERN
    item_id = paths["/v1/collections/{name}/vectors/{id}"]["parameters"][1]["schema"]
    assert (item_id["minLength"], item_id["maxLength"]) == (1, schema.MAX_ID_CHARS)


def test_the_document_says_a_member_follows_no_leader_at_its_own_url() -> None:
    """Found by schemathesis: it offered the node its own URL, which the node refuses."""
    settings = NodeSettings(host="10.0.0.7", port=8080)
    leader = _schemas(settings)["Follow"]["properties"]["leader"]
    own = re.compile(leader["not"]["pattern"])
    assert own.match("http://10.0.0.7:8080") and own.match("http://10.0.0.7:8080//")
    assert not own.match("http://10.0.0.7:8081") and not own.match("http://10.0.0.7:8080/x")
