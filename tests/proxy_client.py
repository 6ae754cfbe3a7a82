"""PROXY protocol headers built by an independent implementation (PyPI's `proxy-protocol`)
against ricochet listeners with `proxy=`: `proxy_client.py READY_JSON`. Prints `ok ...` when
every check held.

The listeners, in the ready line's order: tcp?proxy=v1, tcp?proxy=v2, chat?proxy=any,
tls?proxy=v2 (its certificate in the ready line). Checks: the echo of what follows a header in
the same write and in later writes; v1 and v2, IPv4 and IPv6, v2 LOCAL and v1 UNKNOWN; a chat
member's `/whoami` says the header's source (or, for LOCAL, the socket's own peer); TLS after a v2
header; a v2 header on the v1 listener is refused with nothing echoed.
"""

import ipaddress
import json
import socket
import ssl
import sys

from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6, ProxyResultLocal, ProxyResultUnknown
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

V4 = ProxyResultIPv4((ipaddress.IPv4Address("203.0.113.7"), 56324),
                     (ipaddress.IPv4Address("192.0.2.1"), 7007))
V6 = ProxyResultIPv6((ipaddress.IPv6Address("2001:db8::7"), 4433),
                     (ipaddress.IPv6Address("2001:db8::1"), 7007))


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def echo(addr, header, parts):
    """Sends the header with the first part, the rest one by one; returns all that came back."""
    s = connect(addr)
    s.sendall(header + parts[0])
    for part in parts[1:]:
        s.sendall(part)
    s.shutdown(socket.SHUT_WR)
    back = b""
    while chunk := s.recv(65536):
        back += chunk
    return back


def whoami(addr, header):
    s = connect(addr)
    s.sendall(header + b"/nick probe\n/whoami\n")
    f = s.makefile("rb")
    line = f.readline()
    s.close()
    return line.decode().strip()


def main(ready_path):
    ready = json.load(open(ready_path))
    v1_addr, v2_addr, chat, tls = (l["addr"] for l in ready["listeners"][:4])
    cert = ready["listeners"][3]["cert"]
    v1, v2 = ProxyProtocolV1(), ProxyProtocolV2()

    data = [b"first part", b" second", bytes(range(256)) * 64]
    assert echo(v1_addr, v1.pack(V4), data) == b"".join(data)
    assert echo(v1_addr, v1.pack(V6), data) == b"".join(data)
    assert echo(v1_addr, v1.pack(ProxyResultUnknown()), [b"unknown"]) == b"unknown"
    assert echo(v2_addr, v2.pack(V4), data) == b"".join(data)
    assert echo(v2_addr, v2.pack(V6), data) == b"".join(data)
    assert echo(v2_addr, v2.pack(ProxyResultLocal()), [b"local"]) == b"local"
    # A header split over many writes.
    header = v2.pack(V6)
    assert echo(v2_addr, header[:1], [header[1:5], header[5:17], header[17:], b"late"]) == b"late"

    assert whoami(chat, v1.pack(V4)) == "* you are probe, from 203.0.113.7:56324", whoami(chat, v1.pack(V4))
    assert whoami(chat, v2.pack(V6)) == "* you are probe, from [2001:db8::7]:4433"
    own = whoami(chat, v2.pack(ProxyResultLocal()))
    assert own.startswith("* you are probe, from 127.0.0.1:"), own

    # TLS after the header: the handshake sees none of it.
    context = ssl.create_default_context(cafile=cert)
    raw = connect(tls)
    raw.sendall(v2.pack(V4))
    with context.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"over tls")
        assert s.recv(100) == b"over tls"

    # The wrong version: refused, nothing echoed (a reset or an end of stream).
    s = connect(v1_addr)
    s.sendall(v2.pack(V4) + b"never echoed")
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    print("ok: v1, v2, IPv4, IPv6, LOCAL, UNKNOWN, split, /whoami, TLS, refusal")


if __name__ == "__main__":
    main(sys.argv[1])
