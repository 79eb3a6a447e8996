"""The command line that runs one container process inside its pod's namespaces.

``ip netns exec`` puts the process in the pod's network namespace; ``unshare --mount --uts``
gives it a private mount table (bind mounts of its volumes at their mountPath, invisible to
the host and to other pods) and the pod's hostname. The last step ``exec``s the container's
own argv, so the pid the kubelet holds is the container's process.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from localkube.volumes import Mount

SHELL = "/bin/sh"


def mount_script(mounts: Sequence[Mount], hostname: str, workdir: str | None) -> str:
    """Shell steps run in the new mount namespace before ``exec`` of the container."""
    lines = ["set -e", f"hostname {shlex.quote(hostname)}"]
    for mount in mounts:
        src, dst = shlex.quote(str(mount.source)), shlex.quote(mount.target)
        # A file (a subPath to a key) mounts onto a file, a folder onto a folder.
        lines.append(
            f'if [ -d {src} ]; then mkdir -p {dst}; else mkdir -p "$(dirname {dst})"; '
            f"[ -e {dst} ] || touch {dst}; fi"
        )
        lines.append(f"mount --bind {src} {dst}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {dst}")
    if workdir:
        lines.append(f"mkdir -p {shlex.quote(workdir)}")
        lines.append(f"cd {shlex.quote(workdir)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def container_command(
    netns: str,
    argv: Sequence[str],
    mounts: Sequence[Mount],
    hostname: str,
    workdir: str | None,
    ip: str = "ip",
    unshare: str = "unshare",
) -> list[str]:
    """Full argv: netns, private mount/UTS namespaces, bind mounts, then the container."""
    script = mount_script(mounts, hostname, workdir)
    return [
        ip,
        "netns",
        "exec",
        netns,
        unshare,
        "--mount",
        "--uts",
        "--propagation",
        "private",
        SHELL,
        "-c",
        script,
        "localkube-container",
        *argv,
    ]
