"""Write a one-binary OCI image archive (for the pods' sandbox image, ``localkube/pause``).

No registry is reachable on the project's machines, so the real node cannot pull
registry.k8s.io/pause. The pause program is built from ``localkube/go/pause`` and wrapped here in
an OCI image layout tar that ``ctr images import`` loads. The archive is deterministic (fixed
times, owners, order), so its digest depends on the binary alone.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def layer_tar(binary: bytes, path: str) -> bytes:
    """An uncompressed layer holding ``binary`` at ``path`` (mode 0755, root-owned)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, path.lstrip("/"), binary, 0o755)
    return buffer.getvalue()


def image_archive(binary: bytes, ref: str, path: str = "/pause") -> bytes:
    """OCI image layout tar of one image whose entrypoint is ``path``, named ``ref``."""
    raw = layer_tar(binary, path)
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [path], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [_sha(raw)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": _sha(config), "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": _sha(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": ref},
                }
            ],
        },
        sort_keys=True,
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(tar, "index.json", index)
        for blob in (config, manifest, layer):
            _add(tar, f"blobs/sha256/{_sha(blob).split(':', 1)[1]}", blob)
    return buffer.getvalue()


def write_archive(binary: Path, ref: str, out: Path) -> Path:
    out.write_bytes(image_archive(binary.read_bytes(), ref))
    return out
