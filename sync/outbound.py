"""The outbound policy: which addresses and ports a server name typed by a person may make us connect to.

A host from the connect page (or from an SRV record of a domain someone owns) is hostile until
checked: it is resolved once, every address it resolves to must be public (not loopback, private,
link-local, CGNAT, multicast, reserved or a cloud metadata address, in any IPv4 or IPv6 spelling),
and the connection then goes to the checked address, so a second lookup cannot point elsewhere
(DNS rebinding). Only mail ports are allowed. An operator who runs a private mail server allows its
network with EMAILSYNC_ALLOW_PRIVATE_HOSTS and other ports with EMAILSYNC_ALLOW_PORTS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from sync.deadline import current_deadline
from sync.errors import SyncError, Unreachable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IMAP (143, 993), SMTP submission (465, 587, and 2525, which several providers offer) and relay (25).
MAIL_PORTS = frozenset({25, 143, 465, 587, 993, 2525})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class HostRefused(SyncError):
    """The server name points where this app does not connect (a private network or a non-mail port)."""

    code = "refused"
    transient = False


@dataclass(frozen=True)
class OutboundPolicy:
    """The networks beyond the public internet, and the ports beyond the mail ports, that are allowed."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_ports: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, networks: str = "", ports: str = "") -> OutboundPolicy:
        """From the settings' text: CIDRs ("127.0.0.0/8, ::1/128") and ports or ranges ("1024-65535")."""
        nets = tuple(ipaddress.ip_network(part, strict=False) for part in _items(networks))
        allowed: set[int] = set()
        for part in _items(ports):
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi or lo)
            if not 0 < first <= last < 65536:
                raise ValueError(f"{part} is not a port or a range of ports (1-65535)")
            allowed.update(range(first, last + 1))
        return cls(nets, frozenset(allowed))

    def check_port(self, host: str, port: int) -> None:
        """Refuse a port that is not a mail port and not allowed by the operator."""
        if port not in MAIL_PORTS and port not in self.allow_ports:
            raise HostRefused(
                f"Port {port} is not a mail port.",
                "Mail servers listen on 993 or 143 (IMAP) and 465 or 587 (SMTP). "
                "An operator can allow other ports with EMAILSYNC_ALLOW_PORTS.",
            )

    def allows(self, address: IPAddress) -> bool:
        """True when we may connect to this address."""
        if any(address in net for net in self.allow_networks):
            return True
        return is_public(address)

    def resolve(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to, in resolver order; HostRefused or Unreachable otherwise.

        Every address the name resolves to is checked, not only the first: a name that mixes a public
        and a private address is refused, so the choice of address can never be steered inward.
        """
        name = normalise_host(host)
        self.check_port(name, port)
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError):
            raise Unreachable(
                f"The mail server {name} was not found.", "Check the server name (for example imap.example.com)."
            ) from None
        addresses: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not self.allows(address):
                raise HostRefused(
                    f"{name} points to a private or local network address, where this app does not connect.",
                    "Use your provider's public server name. An operator who runs a private mail server can "
                    "allow its network with EMAILSYNC_ALLOW_PRIVATE_HOSTS.",
                )
            if str(address) not in addresses:
                addresses.append(str(address))
        if not addresses:
            raise Unreachable(f"The mail server {name} was not found.", "Check the server name.")
        return addresses


def open_connection(addresses: list[str], port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first checked address that accepts, watched by the current deadline."""
    dl = current_deadline()
    error: OSError | None = None
    for address in addresses:
        wait = timeout
        if dl is not None:
            wait = min(timeout or dl.remaining(), dl.remaining())
            if wait <= 0:
                raise TimeoutError("deadline passed")
        try:
            sock = socket.create_connection((address, port), timeout=wait)
        except OSError as exc:
            error = exc
            continue
        if dl is not None:
            dl.watch(sock)
        return sock
    raise error or OSError("no address to connect to")


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address, looking inside IPv6 forms that embed IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return False  # a tunnel endpoint says nothing about where the traffic ends
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return not (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def normalise_host(host: str) -> str:
    """A server name as we look it up (lower case, IDNA); HostRefused for anything that is not a host name.

    Numeric forms (`2130706434`, `0x7f.1`, `[::1]`) pass through to the resolver on purpose: whatever
    address they resolve to is checked there, as the connection would use it.
    """
    name = host.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    if not ascii_name or len(ascii_name) > 253 or not all(_LABEL.match(label) for label in ascii_name.split(".")):
        raise Unreachable(
            f"{host.strip()[:80]!r} is not a server name.", "Type a name like imap.example.com, without spaces."
        )
    return ascii_name


def _items(text: str | Iterable[str]) -> list[str]:
    parts = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    return [p.strip() for p in parts if p.strip()]
