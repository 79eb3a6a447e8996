"""``localkube``: build the binaries, start/stop a plane, inspect it, cut a pod's link.

localkube build            build (or find) etcd, kube-apiserver, kube-controller-manager,
                           kubectl, helm, the node's binaries and kube-router; prints their paths
localkube up               start a plane in the background and print how to use it (the node:
                           kubelet, kube-proxy, kube-scheduler, containerd with runc);
                           --network-policy also enforces NetworkPolicies (kube-router)
localkube env              print `export` lines for KUBECONFIG and PATH
localkube status           what is running
localkube down [--force]   stop it; --force also cleans what a crashed run left behind
localkube link NS/POD up|down   take a pod's network link down (a partition) or up
localkube logs NS/POD      the pod's container logs (`kubectl logs` with the plane's kubeconfig)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from localkube import net, procs
from localkube.build import (
    BuildError,
    default_cache_root,
    ensure_binaries,
    ensure_netpol_binaries,
    ensure_node_binaries,
)
from localkube.netplan import NetPlan
from localkube.plane import (
    STATE_FILE,
    Plane,
    PlaneError,
    admin_get,
    default_state_dir,
    force_cleanup,
    stop_recorded,
)


def _state(state_dir: Path) -> dict[str, object] | None:
    path = state_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def cmd_build(args: argparse.Namespace) -> int:
    binaries = ensure_binaries()
    for name, path in sorted(binaries.paths.items()):
        print(f"{name:24} {path}  ({binaries.sources[name]})")
    node = ensure_node_binaries()
    for name, path in sorted(node.paths.items()):
        print(f"{name:24} {path}  (node)")
    for name, path in sorted(ensure_netpol_binaries().paths.items()):
        print(f"{name:24} {path}  (network policies)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    binaries = ensure_binaries()
    tags = dict(item.partition("=")[::2] for item in args.image_tag)
    plane = Plane(
        binaries=binaries,
        state_dir=args.state_dir,
        image_tags=tags,
        network_policy=args.network_policy,
    )
    print(f"starting localkube in {plane.state_dir} ...", file=sys.stderr)
    plane.start()
    print(f"API server {plane.server} is up; node {plane.node_name} is Ready.", file=sys.stderr)
    print("Point kubectl and helm at it with:", file=sys.stderr)
    print(env_lines(plane.state_dir))
    return 0


def env_lines(state_dir: Path) -> str:
    state = _state(state_dir)
    if state is None:
        raise PlaneError(f"no plane is running from {state_dir} (start one with `localkube up`)")
    dirs = ":".join(str(d) for d in state["bin_dirs"])  # type: ignore[attr-defined]
    return "\n".join(
        [
            f"export KUBECONFIG={shlex.quote(str(state['kubeconfig']))}",
            f'export PATH={shlex.quote(dirs)}:"$PATH"',
        ]
    )


def cmd_env(args: argparse.Namespace) -> int:
    print(env_lines(args.state_dir))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _state(args.state_dir)
    if state is None:
        print(f"no plane recorded in {args.state_dir}")
        return 1
    pids: dict[str, int] = state["pids"]  # type: ignore[assignment]
    markers: dict[str, str] = state["markers"]  # type: ignore[assignment]
    for daemon, pid in pids.items():
        running = "running" if procs.alive(pid, markers[daemon]) else "NOT RUNNING"
        print(f"{daemon:24} pid {pid:<8} {running}")
    print(f"API server: {state['server']}   kubeconfig: {state['kubeconfig']}")
    print(f"logs: {args.state_dir / 'logs'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if args.force:
        removed = force_cleanup(args.state_dir, NetPlan(), default_cache_root())
    else:
        removed = stop_recorded(args.state_dir)
    for item in removed:
        print(f"stopped/removed {item}")
    if not removed:
        print("nothing to stop")
    print(f"logs kept in {args.state_dir / 'logs'}")
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    state = _state(args.state_dir)
    if state is None:
        raise PlaneError(f"no plane is running from {args.state_dir}")
    namespace, _, name = args.pod.rpartition("/")
    path = f"/api/v1/namespaces/{namespace or 'default'}/pods/{name}"
    pod = admin_get(str(state["server"]), args.state_dir / "pki", path)
    net.set_link(pod["metadata"]["uid"], args.state == "up")
    print(f"pod {args.pod}: link {args.state}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """The node keeps container logs itself: ask it through the pinned kubectl."""
    state = _state(args.state_dir)
    if state is None:
        raise PlaneError(f"no plane is running from {args.state_dir}")
    namespace, _, name = args.pod.rpartition("/")
    dirs = [Path(d) for d in state["bin_dirs"]]  # type: ignore[attr-defined]
    kubectl = next((d / "kubectl" for d in dirs if (d / "kubectl").exists()), Path("kubectl"))
    argv = [str(kubectl), f"--kubeconfig={state['kubeconfig']}", "logs"]
    argv += ["-n", namespace or "default", name]
    argv += ["-c", args.container] if args.container else ["--all-containers"]
    argv += ["--previous"] if args.previous else []
    return subprocess.run(argv, check=False).returncode


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="localkube", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--state-dir", type=Path, default=default_state_dir())
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or find the binaries").set_defaults(func=cmd_build)
    up = sub.add_parser("up", help="start a plane in the background")
    up.add_argument(
        "--image-tag",
        action="append",
        default=[],
        metavar="REF=PODMAN_IMAGE",
        help="also load a local podman image under the name pods use",
    )
    up.add_argument(
        "--network-policy",
        action="store_true",
        help="enforce NetworkPolicies (kube-router's firewall in the node; built on first use)",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("env", help="print export lines").set_defaults(func=cmd_env)
    sub.add_parser("status", help="show the running plane").set_defaults(func=cmd_status)
    down = sub.add_parser("down", help="stop the plane")
    down.add_argument("--force", action="store_true", help="also clean a crashed run's leftovers")
    down.set_defaults(func=cmd_down)
    link = sub.add_parser("link", help="take a pod's network link up or down")
    link.add_argument("pod", help="NAMESPACE/NAME")
    link.add_argument("state", choices=["up", "down"])
    link.set_defaults(func=cmd_link)
    logs = sub.add_parser("logs", help="print a pod's container logs")
    logs.add_argument("pod", help="NAMESPACE/NAME")
    logs.add_argument("-c", "--container", default=None)
    logs.add_argument(
        "-p",
        "--previous",
        action="store_true",
        help="the container's previous run",
    )
    logs.set_defaults(func=cmd_logs)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except (BuildError, PlaneError, net.NetError) as err:
        print(f"localkube: {err}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
