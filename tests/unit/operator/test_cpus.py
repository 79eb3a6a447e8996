"""The CPU limit becomes the node's search threads; quantities are read as Kubernetes reads them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import annotated_types
import kopf
import kubernetes_validate
import pytest

from dvecdb_node.settings import NodeSettings
from dvecdb_operator import runtime
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.builders.cpus import (
    MAX_SEARCH_THREADS,
    MIN_SEARCH_THREADS,
    cores_of_limit,
    search_threads,
)
from dvecdb_operator.builders.statefulset import build_statefulset, node_env
from dvecdb_operator.drift import drifted
from dvecdb_operator.quantity import (
    MAX_QUANTITY,
    NANO,
    InvalidQuantityError,
    parse_quantity,
)
from dvecdb_operator.spec import InvalidSpecError, parse_spec

pytestmark = pytest.mark.unit

REF = ClusterRef(name="demo", namespace="prod")
THREADS = "DVECDB_SEARCH_THREADS"
# The node's environment as rendered before the search threads existed: a cluster without a
# CPU limit must keep exactly this list, or every member would restart on operator upgrade.
ENV_WITHOUT_LIMIT = [
    "POD_NAME",
    "POD_NAMESPACE",
    "POD_IP",
    "DVECDB_ADVERTISE_URL",
    "DVECDB_FSYNC",
    "DVECDB_DEFAULT_ACK",
    "DVECDB_HNSW_M",
    "DVECDB_HNSW_EF_CONSTRUCTION",
    "DVECDB_HNSW_EF_SEARCH",
    "DVECDB_SECRETS_DIR",
    "DVECDB_LEASE_SECONDS",
    "DVECDB_MAX_READ_STALENESS_SECONDS",
]


def statefulset(resources: dict[str, Any] | None = None) -> dict[str, Any]:
    raw = {} if resources is None else {"resources": resources}
    return build_statefulset(REF, parse_spec(raw), auth_secret="demo-token")


def env_of(sts: dict[str, Any]) -> list[dict[str, Any]]:
    return list(sts["spec"]["template"]["spec"]["containers"][0]["env"])


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("2", "2"),
        (2, "2"),
        ("500m", "0.5"),
        ("2000m", "2"),
        ("2500m", "2.5"),
        ("1.5", "1.5"),
        (0.25, "0.25"),
        ("+1", "1"),
        ("5.", "5"),
        (".5", "0.5"),
        ("1e3", "1000"),
        ("1E3", "1000"),
        ("25e-2", "0.25"),
        ("1E", "1000000000000000000"),  # E alone is exa, not an exponent
        ("1k", "1000"),
        ("1Ki", "1024"),
        ("0.5Gi", "536870912"),
        ("250u", "0.00025"),
        ("3n", "0.000000003"),
        (" 2 ", "2"),  # the API server's JSON decoding trims spaces
        ("-1", "-1"),  # a quantity, refused as a resource amount by the spec
        ("0", "0"),
        ("0m", "0"),
    ],
)
def test_quantities(quantity: object, expected: str) -> None:
    assert parse_quantity(quantity) == Decimal(expected)


def test_quantities_round_up_to_nano_and_cap_like_kubernetes() -> None:
    assert parse_quantity("0.1n") == NANO
    assert parse_quantity("1e-30") == NANO
    assert parse_quantity("-1e-30") == -NANO
    assert parse_quantity("1.0000000001") == Decimal("1.000000001")
    assert parse_quantity("1e400") == MAX_QUANTITY
    assert parse_quantity("9223372036854775808") == MAX_QUANTITY
    assert parse_quantity("5e9223372036854775807") == MAX_QUANTITY
    assert parse_quantity("16Ei") == MAX_QUANTITY


@pytest.mark.parametrize(
    "quantity",
    [
        "",
        " ",
        "m",
        ".",
        "2 cores",
        "1e3m",  # an exponent takes no further suffix
        "1e",
        "1e1.5",  # the exponent is an integer
        "1ki",
        "1KI",
        "1Ki2",
        "1.2.3",
        "0x10",
        "1_000",
        "\uff11",  # a full-width digit: Python's int() would take it, Kubernetes does not
        "1e9223372036854775808",  # exponent beyond int64
        "1e" + "9" * 5000,
        True,
        None,
        float("nan"),
        float("inf"),
        [2],
        {"cpu": 2},
    ],
)
def test_invalid_quantities(quantity: object) -> None:
    with pytest.raises(InvalidQuantityError):
        parse_quantity(quantity)


@pytest.mark.parametrize(
    ("limit", "cores"),
    [
        ("500m", 1),
        ("2", 2),
        (2, 2),
        ("2500m", 3),
        ("2001m", 3),
        ("1.5", 2),
        (0.25, 1),
        ("1m", 1),
        ("1n", 1),
        ("4", 4),
        ("64", 64),
        ("64001m", 64),
        ("100", 64),
        ("1e18", 64),
        ("1Ki", 64),
        ("0", None),  # a zero limit sets no quota: the node's own rule stands
        ("0m", None),
    ],
)
def test_cores_of_limit(limit: object, cores: int | None) -> None:
    assert cores_of_limit(limit) == cores


def test_bounds_match_the_node_setting() -> None:
    """The env value must always pass the node's own validation of `search_threads`."""
    bounds = NodeSettings.model_fields["search_threads"].metadata
    assert [b.ge for b in bounds if isinstance(b, annotated_types.Ge)] == [MIN_SEARCH_THREADS]
    assert [b.le for b in bounds if isinstance(b, annotated_types.Le)] == [MAX_SEARCH_THREADS]


@pytest.mark.parametrize(
    ("resources", "threads"),
    [
        ({}, None),
        ({"requests": {"cpu": "4"}}, None),  # a request does not throttle
        ({"limits": {"memory": "1Gi"}}, None),
        ({"limits": {}}, None),
        ({"limits": {"cpu": "500m"}}, 1),
        ({"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}, 2),
        ({"limits": {"cpu": "2500m", "memory": "4Gi"}}, 3),
    ],
)
def test_search_threads_from_the_limit_only(resources: dict[str, Any], threads: int | None) -> None:
    assert search_threads(resources) == threads


@pytest.mark.parametrize(("limit", "value"), [("500m", "1"), ("2", "2"), ("2500m", "3"), (8, "8")])
def test_env_carries_the_limit(limit: object, value: str) -> None:
    sts = statefulset({"limits": {"cpu": limit, "memory": "1Gi"}, "requests": {"cpu": "100m"}})
    env = env_of(sts)
    assert [e for e in env if e["name"] == THREADS] == [{"name": THREADS, "value": value}]
    assert [e["name"] for e in env] == [*ENV_WITHOUT_LIMIT, THREADS]
    kubernetes_validate.validate(sts, "1.31", strict=True)


@pytest.mark.parametrize(
    "resources",
    [None, {}, {"requests": {"cpu": "2", "memory": "1Gi"}}, {"limits": {"memory": "1Gi"}}],
)
def test_no_limit_leaves_the_statefulset_as_before(resources: dict[str, Any] | None) -> None:
    sts = statefulset(resources)
    assert [e["name"] for e in env_of(sts)] == ENV_WITHOUT_LIMIT
    assert node_env(parse_spec({"resources": resources or {}})) == node_env(parse_spec({}))
    # The live object of an existing cluster (rendered the same way) is not drift: no apply,
    # so no new revision and no rolling restart.
    assert not drifted(statefulset(resources), sts)


def test_adding_or_changing_a_limit_is_drift_and_removing_it_too() -> None:
    without = statefulset({"requests": {"cpu": "1"}})
    two = statefulset({"limits": {"cpu": "2"}})
    three = statefulset({"limits": {"cpu": "2500m"}})
    assert drifted(without, two)
    assert drifted(two, three)
    assert drifted(two, without)
    assert not drifted(two, statefulset({"limits": {"cpu": "2"}}))


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"limits": {"cpu": "2 cores"}}, "limits.cpu: '2 cores' is not a Kubernetes quantity"),
        ({"limits": {"cpu": "1e3m"}}, "limits.cpu: '1e3m' is not a Kubernetes quantity"),
        ({"limits": {"cpu": True}}, "limits.cpu: True is not a quantity"),
        ({"requests": {"memory": "1 GB"}}, "requests.memory: '1 GB' is not a Kubernetes"),
        ({"limits": {"cpu": "-1"}}, "limits.cpu: '-1' is negative"),
        ({"limits": "2"}, "limits must be a mapping"),
    ],
)
def test_bad_quantities_fail_spec_validation(resources: dict[str, Any], message: str) -> None:
    """Refused where every other field is validated: a clear message, never a crash later."""
    with pytest.raises(InvalidSpecError, match=r"^spec\.resources: ") as caught:
        parse_spec({"resources": resources})
    assert message in str(caught.value)


def test_valid_resources_are_kept_as_written() -> None:
    resources = {"limits": {"cpu": 2, "memory": "0.5Gi"}, "requests": {"cpu": "250m"}}
    assert parse_spec({"resources": resources}).resources == resources


async def test_reconcile_refuses_a_bad_cpu_limit_permanently() -> None:
    """kopf stops retrying and records the message; the children are never touched."""
    memo = kopf.Memo(kube=None)
    spec = {"resources": {"limits": {"cpu": "two"}}}
    with pytest.raises(kopf.PermanentError, match=r"spec\.resources: .*limits\.cpu: 'two'"):
        await runtime.reconcile(memo, {"metadata": {"name": "db"}}, spec)
