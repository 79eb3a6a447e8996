"""Secret and ConfigMap volumes follow their objects while the pod runs, as on a kubelet."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from localkube import volumes

pytestmark = pytest.mark.unit


def secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"name": name}, "data": encoded}


POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
    "spec": {
        "volumes": [
            {"name": "keys", "secret": {"secretName": "keys", "defaultMode": 0o440}},
            {"name": "conf", "configMap": {"name": "conf"}},
            {"name": "scratch", "emptyDir": {}},
        ]
    },
}


async def prepared(tmp_path: Path, objects: dict[tuple[str, str], Any]) -> dict[str, Path]:
    return await volumes.prepare(None, POD, tmp_path, objects)  # type: ignore[arg-type]


async def test_an_edited_secret_reaches_the_mounted_files(tmp_path: Path) -> None:
    conf = {"kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {"a": "1"}}
    objects: dict[tuple[str, str], Any] = {
        ("Secret", "keys"): secret("keys", apiKey="old", clusterToken="t"),
        ("ConfigMap", "conf"): conf,
    }
    folders = await prepared(tmp_path, objects)
    keys = folders["keys"]
    (folders["scratch"] / "data").write_text("kept")
    assert (keys / "apiKey").read_text() == "old"
    inode = (keys / "apiKey").stat().st_ino

    assert volumes.refresh(POD, folders, objects) == []  # nothing changed: nothing written
    objects[("Secret", "keys")] = secret("keys", apiKey="new", readOnlyKey="ro")
    assert volumes.refresh(POD, folders, objects) == ["keys"]
    assert (keys / "apiKey").read_text() == "new"
    assert (keys / "readOnlyKey").read_text() == "ro"
    assert not (keys / "clusterToken").exists()  # a removed key goes
    assert (keys / "apiKey").stat().st_mode & 0o777 == 0o440
    assert sorted(p.name for p in keys.iterdir()) == ["apiKey", "readOnlyKey"]
    assert (folders["scratch"] / "data").read_text() == "kept"
    # Replaced by a rename (a reader sees old or new, never half a key), not rewritten.
    assert (keys / "apiKey").stat().st_ino != inode


async def test_a_deleted_secret_leaves_the_last_content(tmp_path: Path) -> None:
    objects: dict[tuple[str, str], Any] = {
        ("Secret", "keys"): secret("keys", apiKey="k"),
        ("ConfigMap", "conf"): {"kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {}},
    }
    folders = await prepared(tmp_path, objects)
    objects[("Secret", "keys")] = None
    assert volumes.refresh(POD, folders, objects) == []
    assert (folders["keys"] / "apiKey").read_text() == "k"
