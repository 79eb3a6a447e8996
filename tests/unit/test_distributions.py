"""Each product folder is a distribution that installs only what it runs: the node image has no
kopf or kubernetes, the operator image no hnswlib, and the client neither the node nor the
operator. Pinned from the pyproject files and from what each package really imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "client": "dvecdb_client",
    "node": "dvecdb_node",
    "operator": "dvecdb_operator",
    "router": "dvecdb_router",
}
# Import name -> distribution name, for the third-party imports of the packages.
DISTRIBUTION = {
    "dvecdb_client": "dvecdb-client",
    "dvecdb_router": "dvecdb-router",
    "hnswlib": "hnswlib",
    "kopf": "kopf",
    "cryptography": "cryptography",
    "kubernetes": "kubernetes",
    "msgspec": "msgspec",
    "numpy": "numpy",
    "orjson": "orjson",
    "aiohttp": "aiohttp",
    "prometheus_client": "prometheus-client",
    "pydantic": "pydantic",
    "pydantic_settings": "pydantic-settings",
    "uvloop": "uvloop",
    "yaml": "pyyaml",
}


def requirements(folder: str) -> set[str]:
    project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=;! \[]", dep, maxsplit=1)[0] for dep in project["dependencies"]}


def imported(folder: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / folder / "src" / PACKAGES[folder]).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {PACKAGES[folder], "__future__"}


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_a_distribution_declares_every_package_it_imports(folder: str) -> None:
    imports = imported(folder)
    assert imports <= set(DISTRIBUTION), f"unknown imports: {imports - set(DISTRIBUTION)}"
    assert {DISTRIBUTION[name] for name in imports} <= requirements(folder)


def test_the_images_install_only_what_they_run() -> None:
    assert not {"kopf", "kubernetes", "dvecdb-operator"} & requirements("node")
    assert not {"kopf", "kubernetes"} & {DISTRIBUTION[n] for n in imported("node")}
    assert not {"hnswlib", "dvecdb-node"} & requirements("operator")
    assert not {"hnswlib", "dvecdb_node"} & imported("operator")
    assert imported("client") <= {"aiohttp", "numpy", "orjson"}
    # The router holds no index and runs no operator.
    assert not {"hnswlib", "kopf", "kubernetes", "dvecdb-node"} & requirements("router")
    for image, folder in (
        ("Dockerfile.node", "node"),
        ("Dockerfile.operator", "operator"),
        ("Dockerfile.router", "router"),
    ):
        copied = re.findall(r"^COPY (\w+) ", (ROOT / image).read_text(), flags=re.M)
        assert copied == ["client", folder]
