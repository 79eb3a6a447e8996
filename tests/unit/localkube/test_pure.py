"""Pure decisions of localkube: the network plan and the binaries' cache key."""

from __future__ import annotations

from pathlib import Path

import pytest

from localkube import netplan, versions
from localkube.build import BuildError, assets_binaries, components_to_build, ensure_binaries

pytestmark = pytest.mark.unit


def test_net_plan_splits_the_block() -> None:
    plan = netplan.NetPlan()
    assert plan.bridge_ip == "10.213.0.1" and plan.bridge_cidr == "10.213.0.1/25"
    assert plan.service_cidr == "10.213.0.128/25"
    assert plan.kubernetes_service_ip == "10.213.0.129"
    uid = "0b7a5f3e-1111-2222-3333-444455556666"
    assert netplan.netns_name(uid) == "lk-0b7a5f3e11112222"


def test_cache_key_changes_with_pins(tmp_path: Path) -> None:
    for component in versions.COMPONENTS:
        folder = tmp_path / component.module_dir
        folder.mkdir()
        (folder / "go.mod").write_text(f"module {component.name}\n")
        (folder / "go.sum").write_text("")
    first = versions.cache_key("go1.26.8", tmp_path)
    assert first == versions.cache_key("go1.26.8", tmp_path)
    assert first != versions.cache_key("go1.27.0", tmp_path)
    (tmp_path / "helm" / "go.sum").write_text("helm.sh/helm/v3 v3.22.1 h1:x\n")
    assert versions.cache_key("go1.26.8", tmp_path) != first
    assert first.startswith(f"k8s-{versions.KUBERNETES_VERSION}_")


def test_kubebuilder_assets_skip_the_build(tmp_path: Path) -> None:
    """Binaries found in KUBEBUILDER_ASSETS are used as they are; nothing is built."""
    for name in versions.ALL_BINARIES:
        binary = tmp_path / name
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    found = ensure_binaries(cache_root=tmp_path / "cache", assets=str(tmp_path))
    assert found["kube-apiserver"] == (tmp_path / "kube-apiserver").resolve()
    assert set(found.sources.values()) == {"KUBEBUILDER_ASSETS"}
    assert not (tmp_path / "cache").exists()


def test_envtest_layout_lists_only_what_it_has(tmp_path: Path) -> None:
    for name in ("etcd", "kube-apiserver", "kubectl"):  # what setup-envtest ships
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o755)
    assert sorted(assets_binaries(str(tmp_path))) == ["etcd", "kube-apiserver", "kubectl"]
    missing = set(versions.ALL_BINARIES) - set(assets_binaries(str(tmp_path)))
    assert [c.name for c in components_to_build(missing)] == ["kubernetes", "helm"]
    with pytest.raises(BuildError, match="not a folder"):
        assets_binaries(str(tmp_path / "nope"))
