"""Ask the cluster's DNS (CoreDNS on the node) for a name's IPv4 addresses, from the host.

The host's own resolver knows nothing of ``cluster.local`` (and the harness never edits
``/etc/resolv.conf``), so tests and the demo resolve Service names with this one-question UDP
client and then connect to the address: the host routes the service range to the node, where
kube-proxy's rules are. ``encode_query`` and ``decode_answers`` are pure.
"""

from __future__ import annotations

import os
import socket
import struct

TYPE_A, CLASS_IN = 1, 1


def encode_query(name: str, ident: int) -> bytes:
    """One recursion-desired question for the A records of ``name``."""
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")
    )
    return header + labels + b"\0" + struct.pack("!HH", TYPE_A, CLASS_IN)


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def decode_answers(message: bytes, ident: int) -> list[str] | None:
    """The A addresses of a reply to ``ident``; None when it is not that reply or is an error
    (NXDOMAIN, REFUSED, SERVFAIL)."""
    if len(message) < 12:
        return None
    got, flags, questions, answers = struct.unpack("!HHHH", message[:8])
    if got != ident or not flags & 0x8000 or flags & 0x000F:
        return None
    offset = 12
    for _ in range(questions):
        offset = _skip_name(message, offset) + 4
    found = []
    for _ in range(answers):
        offset = _skip_name(message, offset)
        rtype, rclass, _, length = struct.unpack("!HHIH", message[offset : offset + 10])
        offset += 10
        if rtype == TYPE_A and rclass == CLASS_IN and length == 4:
            found.append(socket.inet_ntoa(message[offset : offset + 4]))
        offset += length
    return found


def resolve(server: str, name: str, timeout: float = 2.0, port: int = 53) -> list[str]:
    """The IPv4 addresses ``server`` gives for ``name`` (fully qualified); [] when none or no
    answer in time."""
    ident = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(encode_query(name, ident), (server, port))
            while True:
                reply, _ = sock.recvfrom(4096)
                answers = decode_answers(reply, ident)
                if answers is not None or reply[:2] == ident.to_bytes(2, "big"):
                    return answers or []
        except OSError:  # timeout, unreachable
            return []
