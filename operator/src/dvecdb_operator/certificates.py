"""The certificates the operator makes for `spec.tls` (DESIGN.md "Access"): pure functions.

Which certificates a cluster needs and with which names (`wanted_leaves`), whether one held
must be issued again (`reissue_reason`: missing, names changed, another CA, renewal due at
2/3 of its lifetime), and the issuing itself (`new_ca`, `issue_leaf`). No I/O: `tlsplan`
reads and writes the Secrets.

Members reach each other by pod IP (no cluster DNS is assumed), so a member's certificate
names its pod IP once the pod has one, besides its DNS names through the headless Service
and the group's Services; a pod that restarts with a new IP gets a new certificate. The
group's `-rw`/`-ro` Services' ClusterIPs (and the router Service's, on the router's
certificate) are named too once allocated, so a client connecting by ClusterIP verifies the
server without `server_hostname`; a Service made again with another ClusterIP reissues them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dvecdb_operator.builders.common import ClusterRef

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=90)
# The kept CA is never renewed: warned about this long before it ends, more than a leaf's
# lifetime, so there is time to replace it before certificates outlive it.
CA_WARN_BEFORE = dt.timedelta(days=120)
# Renewal at this part of a certificate's lifetime: a third of it is left to roll it out.
RENEW_AT = 2 / 3
# Backdated so a member whose clock is a little behind accepts a fresh certificate.
BACKDATE = dt.timedelta(minutes=5)
ROUTER_LEAF = "router"
CA_CERT_KEY = "ca.crt"
CA_KEY_KEY = "ca.key"


@dataclass(frozen=True)
class Leaf:
    """One certificate to hold: `name` keys it in the Secret (`NAME.crt`, `NAME.key`)."""

    name: str
    dns: tuple[str, ...]
    ips: tuple[str, ...] = ()

    @property
    def cert_key(self) -> str:
        return f"{self.name}.crt"

    @property
    def key_key(self) -> str:
        return f"{self.name}.key"


def service_names(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names a Service answers to, short to fully qualified."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def member_leaf(
    group: ClusterRef, ordinal: int, ip: str | None, service_ips: Mapping[str, str] | None = None
) -> Leaf:
    """A member's names: its pod through the headless Service, its group's Services (a client
    of `NAME-rw` must accept whichever member answers) and their ClusterIPs (`service_ips`:
    ClusterIP by Service name, when allocated), its pod IP when known."""
    pod = group.pod(ordinal)
    ns = group.namespace
    headless = f"{pod}.{group.headless_service}"
    dns = (
        pod,
        *service_names(headless, ns)[1:],
        *service_names(group.headless_service, ns),
        *service_names(group.rw_service, ns),
        *service_names(group.ro_service, ns),
        "localhost",
    )
    known = service_ips or {}
    services = [known[s] for s in (group.rw_service, group.ro_service) if s in known]
    return Leaf(pod, dns, _ips(["127.0.0.1", *([ip] if ip else []), *services]))


def router_leaf(
    cluster: ClusterRef, ips: Iterable[str] = (), service_ips: Mapping[str, str] | None = None
) -> Leaf:
    """The router's names: its Service `NAME` (the client endpoint) and its ClusterIP once
    allocated, and its pods' IPs."""
    dns = (*service_names(cluster.router_service, cluster.namespace), "localhost")
    service = (service_ips or {}).get(cluster.router_service)
    return Leaf(ROUTER_LEAF, dns, _ips(["127.0.0.1", *ips, *([service] if service else [])]))


def service_names_of(cluster: ClusterRef) -> list[str]:
    """The Services whose ClusterIPs the certificates name: each group's rw and ro Services
    and the router's (the headless Service has no ClusterIP)."""
    names = [n for group in cluster.groups for n in (group.rw_service, group.ro_service)]
    return [*names, cluster.router_service]


def _ips(ips: Iterable[str]) -> tuple[str, ...]:
    """Valid addresses, each once, in a stable order (a reordering is no change)."""
    found = set()
    for ip in ips:
        try:
            found.add(ipaddress.ip_address(ip))
        except ValueError:
            continue
    return tuple(str(a) for a in sorted(found, key=lambda a: (a.version, int(a))))


def wanted_leaves(
    cluster: ClusterRef,
    replicas: Mapping[int, int],
    pod_ips: Mapping[str, str],
    router_ips: Iterable[str] = (),
    service_ips: Mapping[str, str] | None = None,
) -> list[Leaf]:
    """Every certificate the cluster needs: each group's members 0..replicas-1, and any other
    member pod that still runs (a scale-down in progress), and the router's.

    `replicas`: each shard's member count; `pod_ips`: the member pods' IPs by pod name;
    `service_ips`: the Services' ClusterIPs by Service name (those allocated).
    """
    leaves: list[Leaf] = []
    for group in cluster.groups:
        ordinals = set(range(replicas.get(group.shard, 0)))
        ordinals |= {
            int(name.rpartition("-")[2])
            for name in pod_ips
            if group.owns_pod(name) and name.rpartition("-")[2].isdigit()
        }
        for ordinal in sorted(ordinals):
            leaves.append(member_leaf(group, ordinal, pod_ips.get(group.pod(ordinal)), service_ips))
    leaves.append(router_leaf(cluster, router_ips, service_ips))
    return leaves


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_ca(common_name: str, now: dt.datetime) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_leaf(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    leaf: Leaf,
    now: dt.datetime,
    lifetime: dt.timedelta = LEAF_LIFETIME,
) -> tuple[bytes, bytes]:
    """A server-and-client certificate for `leaf`, signed by the CA: (cert PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in leaf.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in leaf.ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(leaf.dns[0] if leaf.dns else leaf.name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def renew_at(cert: x509.Certificate) -> dt.datetime:
    """When a certificate is renewed: `RENEW_AT` of the way through its lifetime."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_AT


def names_of(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[str]]:
    """(DNS names, IP addresses) of a certificate's SANs."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    dns = frozenset(sans.get_values_for_type(x509.DNSName))
    ips = frozenset(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
    return dns, ips


def reissue_reason(
    cert_pem: bytes | None,
    key_pem: bytes | None,
    leaf: Leaf,
    ca_cert_pem: bytes,
    now: dt.datetime,
) -> str | None:
    """Why the certificate held for `leaf` must be issued again, or None if it may stay."""
    if not cert_pem or not key_pem:
        return "missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        return "unreadable"
    if cert.public_key() != key.public_key():
        return "key does not match"
    if cert.issuer != ca.subject:
        return "issued by another CA"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return "issued by another CA"
    dns, ips = names_of(cert)
    if dns != frozenset(leaf.dns) or ips != frozenset(leaf.ips):
        return "names changed"
    if now >= renew_at(cert):
        return "renewal due"
    return None


def next_renewal(cert_pems: Iterable[bytes]) -> dt.datetime | None:
    """The earliest renewal time of the given certificates (None for none readable)."""
    times = []
    for pem in cert_pems:
        try:
            times.append(renew_at(x509.load_pem_x509_certificate(pem)))
        except ValueError:
            continue
    return min(times) if times else None


def ca_pair_valid(cert_pem: bytes | None, key_pem: bytes | None, now: dt.datetime) -> bool:
    """A usable CA: both halves readable, matching, a CA, and not expired."""
    if not cert_pem or not key_pem:
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return False
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    return ca and cert.public_key() == key.public_key() and now < cert.not_valid_after_utc


def expires_at(cert_pem: bytes | None) -> dt.datetime | None:
    """A certificate's end of validity (None when unreadable)."""
    if not cert_pem:
        return None
    try:
        return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
    except ValueError:
        return None


def ca_expiry_warning(
    ca_cert_pem: bytes | None, now: dt.datetime, *, before: dt.timedelta = CA_WARN_BEFORE
) -> str | None:
    """What to tell the user when the CA ends within `before` (the operator does not renew
    it); None while it has longer, or when it cannot be read."""
    end = expires_at(ca_cert_pem)
    if end is None or end - now > before:
        return None
    left = (end - now).days
    when = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    if end <= now:
        return f"the CA (ca.crt) expired at {when}: no certificate it signed verifies"
    return (
        f"the CA (ca.crt) expires at {when} ({left} days left) and the operator does not renew"
        " it: replace it before then and give clients the new ca.crt"
    )
