"""Pure translation of a pod spec into what a local process needs: argv, env, work dir.

Follows Kubernetes' rules: ``command`` replaces the image's entry point and ``args`` its
arguments; ``$(VAR)`` in command, args and env values expands from the container's env
(``$$`` escapes); env comes from literal values, Secret and ConfigMap keys, ``envFrom``, and
Downward API fields. Missing non-optional references raise ``ConfigError``, which the kubelet
reports as ``CreateContainerConfigError`` like the real one.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

Json = dict[str, Any]
Objects = Mapping[tuple[str, str], Json | None]  # (kind, name) -> object or None if absent

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


class ConfigError(Exception):
    """A container's configuration references something missing or unsupported."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown references stay as written, ``$$`` -> ``$``."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(repl, value)


def _label_key(path: str, prefix: str) -> str | None:
    match = re.fullmatch(re.escape(prefix) + r"\['(.+)'\]", path)
    return match.group(1) if match else None


def field_ref(pod: Json, path: str) -> str:
    """The Downward API value of ``fieldRef.fieldPath`` for this pod."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", [])),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs", [])),
    }
    if path in simple:
        return str(simple[path])
    for prefix, field in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path == prefix:
            items = sorted((meta.get(field) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in items)
        key = _label_key(path, prefix)
        if key is not None:
            return str((meta.get(field) or {}).get(key, ""))
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``1Gi``, ``2``) as a number."""
    match = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)(n|u|m|k|M|G|T|Ki|Mi|Gi|Ti)?", text)
    if not match:
        raise ConfigError(f"bad resource quantity {text!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]


def resource_field(container: Json, ref: Json, node_allocatable: Mapping[str, str]) -> str:
    """``resourceFieldRef``: the limit (or node allocatable when unset), ceil'd by divisor."""
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    section = resources.get(kind) or {}
    raw = section.get(name)
    if raw is None and kind == "requests":
        raw = "0"
    if raw is None:
        raw = node_allocatable.get(name)
    if raw is None:
        raise ConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    divisor = parse_quantity(str(ref.get("divisor", "1")))
    return str(math.ceil(parse_quantity(str(raw)) / divisor))


def _data(obj: Json) -> dict[str, str]:
    """Key -> text for a ConfigMap (data) or Secret (base64 data, stringData)."""
    if obj.get("kind") == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def _key_ref(kind: str, ref: Json, objects: Objects) -> str | None:
    name = ref.get("name", "")
    key = ref.get("key", "")
    optional = bool(ref.get("optional", False))
    obj = objects.get((kind, name))
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    data = _data(obj)
    if key not in data:
        if optional:
            return None
        raise ConfigError(
            f"couldn't find key {key} in {kind} {obj['metadata']['namespace']}/{name}"
        )
    return data[key]


def container_env(
    pod: Json,
    container: Json,
    objects: Objects,
    base: Mapping[str, str],
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The process environment: ``base`` (service vars, PATH...), then envFrom, then env."""
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(field)
            if ref is None:
                continue
            obj = objects.get((kind, ref.get("name", "")))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            for key, text in _data(obj).items():
                env[prefix + key] = text
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            value = _key_ref("Secret", source["secretKeyRef"], objects)
        elif "configMapKeyRef" in source:
            value = _key_ref("ConfigMap", source["configMapKeyRef"], objects)
        elif "resourceFieldRef" in source:
            value = resource_field(container, source["resourceFieldRef"], node_allocatable)
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def referenced_objects(pod: Json) -> set[tuple[str, str]]:
    """Every (kind, name) of ConfigMap/Secret the pod's env and volumes read."""
    refs: set[tuple[str, str]] = set()
    spec = pod.get("spec", {})
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                refs.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                refs.add(("Secret", source["secretRef"]["name"]))
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                refs.add(("Secret", source["secretKeyRef"]["name"]))
            if "configMapKeyRef" in source:
                refs.add(("ConfigMap", source["configMapKeyRef"]["name"]))
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                refs.add(("Secret", source["secret"]["name"]))
            if "configMap" in source:
                refs.add(("ConfigMap", source["configMap"]["name"]))
    return refs


def argv(container: Json, entrypoint: list[str], env: Mapping[str, str]) -> list[str]:
    """``command`` replaces the entry point, ``args`` follow; both get ``$(VAR)`` expansion."""
    command = container.get("command")
    args = container.get("args") or []
    head = list(command) if command else list(entrypoint)
    return [expand(str(a), env) for a in head] + [expand(str(a), env) for a in args]
