"""Pure decisions of localkube: pod spec translation, status, images, network plan, cache key."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

import pytest

from localkube import images, launch, netplan, podspec, podstatus, versions
from localkube.build import BuildError, assets_binaries, components_to_build, ensure_binaries
from localkube.container import exit_code_of, should_restart
from localkube.volumes import Mount, ensure_mountpoint, remove_mountpoints

pytestmark = pytest.mark.unit

POD = {
    "metadata": {
        "name": "dvec-0",
        "namespace": "prod",
        "uid": "u-1",
        "labels": {"app": "dvec", "tier": "db"},
        "annotations": {"note": "x"},
    },
    "spec": {"nodeName": "localkube", "serviceAccountName": "dvec"},
    "status": {"podIP": "10.213.0.5", "podIPs": [{"ip": "10.213.0.5"}], "hostIP": "10.213.0.1"},
}


def secret(name: str, **data: str) -> dict[str, object]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"name": name, "namespace": "prod"}, "data": encoded}


def config_map(name: str, **data: str) -> dict[str, object]:
    return {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "prod"}, "data": data}


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert podspec.expand("$(A)-$(B)", env) == "1-two"
    assert podspec.expand("$(MISSING)", env) == "$(MISSING)"
    assert podspec.expand("$$(A)", env) == "$(A)"
    assert podspec.expand("no refs", env) == "no refs"


def test_field_refs() -> None:
    assert podspec.field_ref(POD, "metadata.name") == "dvec-0"
    assert podspec.field_ref(POD, "status.podIP") == "10.213.0.5"
    assert podspec.field_ref(POD, "metadata.labels['tier']") == "db"
    assert podspec.field_ref(POD, "metadata.labels") == 'app="dvec"\ntier="db"'
    assert podspec.field_ref(POD, "spec.serviceAccountName") == "dvec"
    with pytest.raises(podspec.ConfigError):
        podspec.field_ref(POD, "spec.containers")


def test_container_env_sources_and_order() -> None:
    container = {
        "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
        "env": [
            {"name": "BASE", "value": "b"},
            {"name": "DERIVED", "value": "$(BASE)/$(POD)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        "resources": {"limits": {"memory": "256Mi"}},
    }
    objects = {
        ("ConfigMap", "cfg"): config_map("cfg", mode="fast"),
        ("Secret", "auth"): secret("auth", token="t0k"),
        ("Secret", "nope"): None,
    }
    env = podspec.container_env(POD, container, objects, {"PATH": "/bin"}, {"memory": "1Gi"})
    assert env == {
        "PATH": "/bin",
        "CFG_mode": "fast",
        "BASE": "b",
        "DERIVED": "b/$(POD)",  # POD is defined later, so it does not expand (as in Kubernetes)
        "POD": "dvec-0",
        "TOKEN": "t0k",
        "MODE": "fast",
        "MEM": "256",
    }


def test_missing_required_reference_is_a_config_error() -> None:
    container = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(podspec.ConfigError, match='secret "s" not found'):
        podspec.container_env(POD, container, {("Secret", "s"): None}, {}, {})
    objects = {("Secret", "s"): secret("s", other="v")}
    with pytest.raises(podspec.ConfigError, match="couldn't find key k"):
        podspec.container_env(POD, container, objects, {}, {})


def test_argv_command_replaces_entrypoint_and_expands() -> None:
    env = {"NAME": "dvec-0"}
    assert podspec.argv({"args": ["--node-id=$(NAME)"]}, ["/venv/bin/dvecdb-node"], env) == [
        "/venv/bin/dvecdb-node",
        "--node-id=dvec-0",
    ]
    assert podspec.argv({"command": ["sh", "-c"], "args": ["echo"]}, ["/x"], env) == [
        "sh",
        "-c",
        "echo",
    ]


def test_referenced_objects_from_env_and_volumes() -> None:
    pod = {
        "spec": {
            "containers": [
                {
                    "envFrom": [{"secretRef": {"name": "a"}}],
                    "env": [
                        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "b", "key": "k"}}}
                    ],
                }
            ],
            "volumes": [
                {"name": "v", "secret": {"secretName": "c"}},
                {
                    "name": "p",
                    "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]},
                },
            ],
        }
    }
    assert podspec.referenced_objects(pod) == {
        ("Secret", "a"),
        ("ConfigMap", "b"),
        ("Secret", "c"),
        ("ConfigMap", "kube-root-ca.crt"),
    }


def test_quantities() -> None:
    assert podspec.parse_quantity("500m") * 1000 == 500
    assert podspec.parse_quantity("1Gi") == 2**30
    with pytest.raises(podspec.ConfigError):
        podspec.parse_quantity("lots")


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("dvecdb/node", "dvecdb/node"),
        ("dvecdb/node:0.1.0", "dvecdb/node"),
        ("docker.io/dvecdb/node:0.1.0", "dvecdb/node"),
        ("localhost:5000/dvecdb/operator:dev", "dvecdb/operator"),
        ("dvecdb/node@sha256:abc", "dvecdb/node"),
        ("nginx:1.27", "nginx"),
        ("docker.io/library/nginx", "nginx"),
    ],
)
def test_image_repository(image: str, repo: str) -> None:
    assert images.repository(image) == repo


def test_unknown_image_is_refused_with_the_known_ones() -> None:
    with pytest.raises(images.ImageError) as caught:
        images.entrypoint("nginx:1.27", images.DEFAULT_IMAGES)
    assert caught.value.reason == "ErrImagePull"
    assert "dvecdb/node" in caught.value.message and "nginx:1.27" in caught.value.message


def test_mapped_but_missing_program_is_refused() -> None:
    with pytest.raises(images.ImageError, match="not installed"):
        images.entrypoint("dvecdb/none:1", {"dvecdb/none": "no-such-program-xyz"})


def test_restart_decisions() -> None:
    assert should_restart("Always", 0, init=False)
    assert should_restart("OnFailure", 1, init=False)
    assert not should_restart("OnFailure", 0, init=False)
    assert not should_restart("Never", 1, init=False)
    assert should_restart("Always", 1, init=True)
    assert not should_restart("Always", 0, init=True)
    assert not should_restart("Never", 1, init=True)
    assert exit_code_of(-9) == 137 and exit_code_of(-15) == 143 and exit_code_of(3) == 3


def _facts(statuses: list[dict[str, object]], policy: str = "Always") -> podstatus.PodFacts:
    return podstatus.PodFacts(
        restart_policy=policy,
        pod_ip="10.213.0.2",
        host_ip="10.213.0.1",
        start_time="t0",
        network_ready=True,
        init_done=True,
        init_statuses=[],
        statuses=statuses,
    )


def test_pod_phase_and_conditions() -> None:
    running = {"ready": True, "state": {"running": {}}, "restartCount": 0}
    status = podstatus.pod_status(_facts([running]), "t1")
    assert status["phase"] == "Running" and status["podIP"] == "10.213.0.2"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    done = {"ready": False, "state": {"terminated": {"exitCode": 0}}, "restartCount": 0}
    failed = {"ready": False, "state": {"terminated": {"exitCode": 2}}, "restartCount": 0}
    assert podstatus.phase(_facts([done], "Never")) == "Succeeded"
    assert podstatus.phase(_facts([done, failed], "Never")) == "Failed"
    assert podstatus.phase(_facts([{"state": {"waiting": {}}}])) == "Pending"
    not_ready = dict(running, ready=False)
    status = podstatus.pod_status(_facts([not_ready]), "t2", previous=status)
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["lastTransitionTime"] == "t2"
    scheduled = {c["type"]: c for c in status["conditions"]}["PodScheduled"]
    assert scheduled["lastTransitionTime"] == "t1", "unchanged conditions keep their time"


def test_net_plan_splits_the_block() -> None:
    plan = netplan.NetPlan()
    assert plan.bridge_ip == "10.213.0.1" and plan.bridge_cidr == "10.213.0.1/25"
    assert plan.service_cidr == "10.213.0.128/25"
    assert plan.kubernetes_service_ip == "10.213.0.129"
    assert netplan.allocate_ip(plan, set()) == "10.213.0.2"
    assert netplan.allocate_ip(plan, {"10.213.0.2"}) == "10.213.0.3"
    with pytest.raises(RuntimeError, match="full"):
        netplan.allocate_ip(plan, set(plan.pod_addresses()))
    uid = "0b7a5f3e-1111-2222-3333-444455556666"
    assert len(netplan.veth_name(uid)) <= 15 and netplan.veth_name(uid).startswith("lkv")
    assert netplan.netns_name(uid).startswith("lk-")


def test_launch_command_binds_volumes_then_execs() -> None:
    mounts = [
        Mount(Path("/state/v/data"), "/data", False),
        Mount(Path("/state/v/s"), "/etc/s", True),
    ]
    argv = launch.container_command("lk-x", ["/bin/app", "--flag"], mounts, "dvec-0", "/data")
    assert argv[:4] == ["ip", "netns", "exec", "lk-x"]
    assert argv[-2:] == ["/bin/app", "--flag"]
    script = argv[argv.index("-c") + 1]
    assert "mount --bind /state/v/data /data" in script
    assert "mount -o remount,bind,ro /etc/s" in script
    assert script.splitlines()[-1] == 'exec "$@"'
    assert shlex.quote("dvec-0") in script


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


def test_mountpoints_created_for_a_pod_are_removed_when_empty(tmp_path: Path) -> None:
    source_dir, source_file = tmp_path / "vol", tmp_path / "key"
    source_dir.mkdir()
    source_file.write_text("secret")
    ledger = tmp_path / "ledger"
    host = tmp_path / "host"
    host.mkdir()
    ensure_mountpoint(Mount(source_dir, str(host / "data" / "deep"), False), ledger)
    ensure_mountpoint(Mount(source_file, str(host / "etc" / "app.conf"), True), ledger)
    ensure_mountpoint(Mount(source_dir, str(host), False), ledger)  # exists: not recorded
    assert (host / "data" / "deep").is_dir() and (host / "etc" / "app.conf").is_file()
    (host / "keep").mkdir()
    (host / "keep" / "file").write_text("data")
    assert sorted(remove_mountpoints(ledger)) == [str(host / "data"), str(host / "etc")]
    assert sorted(p.name for p in host.iterdir()) == ["keep"] and not ledger.exists()


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
