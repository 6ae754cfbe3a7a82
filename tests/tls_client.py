"""A TLS client on Python's ssl module (OpenSSL: a TLS stack independent of rustls), driven by
tests/tls.rs. Each mode prints one line starting with "ok" or exits non-zero with the reason.

    echo ADDR CA VERSION SIZE...    one connection per size: exact echo, written while reading
    half-close ADDR CA SIZE         data, then close_notify: everything comes back, then theirs
    many ADDR CA N                  N connections at once, each an exact 10 000-byte echo
    resume ADDR CA                  a second connection resumes the first one's session
    plain ADDR                      plain bytes to a TLS port: an alert, then the end
    chat ADDR CA                    two members of a TLS chat room: a line goes across
    leave ADDR [ccs]                a ClientHello, the server's answer read, then our end of
                                    stream with no alert (a client that gave up): the server's
                                    end must follow. With `ccs`, a ChangeCipherSpec record goes
                                    just before the end, as rustls's client sends it: the two
                                    arrive together, and the end must still be seen
"""

import os
import select
import socket
import ssl
import sys
import threading

TIMEOUT = 30


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def context(ca, version=None):
    ctx = ssl.create_default_context(cafile=ca)
    if version:
        v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
        ctx.minimum_version = ctx.maximum_version = v
    return ctx


def connect(addr, ctx, **kw):
    raw = socket.create_connection(split(addr), timeout=TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="localhost", **kw)


def echo_once(addr, ctx, data, version=None):
    """Writes and reads on one thread (an SSL object must not be shared between threads)."""
    s = connect(addr, ctx)
    s.setblocking(False)
    sent, got = 0, bytearray()
    while len(got) < len(data):
        want_write = [s] if sent < len(data) else []
        readable, writable, _ = select.select([s], want_write, [], TIMEOUT)
        if not readable and not writable and not s.pending():
            sys.exit(f"timed out: {sent} of {len(data)} bytes sent, {len(got)} back")
        if writable:
            try:
                sent += s.send(data[sent : sent + (1 << 16)])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        while True:
            try:
                chunk = s.recv(1 << 16)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                sys.exit(f"the stream ended after {len(got)} of {len(data)} bytes")
            got.extend(chunk)
    if bytes(got) != data:
        sys.exit(f"{len(data)} bytes sent, {len(got)} back, equal: {bytes(got) == data}")
    if version and s.version() != f"TLSv{version}":
        sys.exit(f"negotiated {s.version()}, asked for {version}")
    s.close()


def half_close(addr, ca, size):
    """Memory BIOs, so that our close_notify goes out while the echo is still coming back."""
    raw = socket.create_connection(split(addr), timeout=TIMEOUT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")

    def send_out():
        pending = outgoing.read()
        if pending:
            raw.sendall(pending)

    def take_in():
        chunk = raw.recv(1 << 16)
        if not chunk:
            incoming.write_eof()
            return False
        incoming.write(chunk)
        return True

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            send_out()
            take_in()
    send_out()
    data = os.urandom(size)
    tls.write(data)
    try:
        tls.unwrap()  # our close_notify: TLS's half-close
    except ssl.SSLWantReadError:
        pass
    send_out()
    got, closed = bytearray(), False
    while not closed and take_in():
        while True:
            try:
                chunk = tls.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got.extend(chunk)
    if bytes(got) != data:
        sys.exit(f"{size} bytes sent before close_notify, {len(got)} back")
    if not closed:
        sys.exit("no close_notify from the server")
    print("ok half-close", size)


def many(addr, ca, n):
    ctx = context(ca)
    errors = []

    def one(i):
        try:
            echo_once(addr, ctx, bytes([i % 256]) * 10_000)
        except BaseException as e:  # SystemExit from echo_once too
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"{len(errors)} of {n} failed: {errors[:3]}")
    print("ok many", n)


def resume(addr, ca):
    ctx = context(ca)
    first = connect(addr, ctx)
    first.sendall(b"first")
    first.recv(5)  # TLS 1.3 tickets arrive after the handshake
    session = first.session
    first.close()
    second = connect(addr, ctx, session=session)
    second.sendall(b"second")
    assert second.recv(6) == b"second"
    if not second.session_reused:
        sys.exit("the second connection did not resume the session")
    second.close()
    print("ok resume")


def plain(addr):
    raw = socket.create_connection(split(addr), timeout=TIMEOUT)
    raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
    got = b""
    while True:
        chunk = raw.recv(4096)
        if not chunk:
            break
        got += chunk
    if not got.startswith(b"\x15\x03"):
        sys.exit(f"expected a TLS alert record, got {got[:16]!r}")
    print("ok plain", got.hex())


def chat(addr, ca):
    ctx = context(ca)
    a, b = connect(addr, ctx), connect(addr, ctx)
    for member in (a, b):
        member.sendall(b"/who\n")
    # Each sees a /who answer once both are in; then a line from a reaches b.
    a.sendall(b"hello over tls\n")
    seen = b""
    while b"hello over tls\n" not in seen:
        chunk = b.recv(4096)
        if not chunk:
            sys.exit(f"b's stream ended: {seen!r}")
        seen += chunk
    print("ok chat")


def leave(addr, ccs):
    raw = socket.create_connection(split(addr), timeout=TIMEOUT)
    inbio, outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(inbio, outbio, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    raw.sendall(outbio.read())  # the ClientHello
    first = raw.recv(4096)
    if not first.startswith(b"\x16\x03"):
        sys.exit(f"expected the server's handshake records, got {first[:16]!r}")
    if ccs:
        raw.sendall(b"\x14\x03\x03\x00\x01\x01")
    raw.shutdown(socket.SHUT_WR)  # no alert, no more records: just our end
    while True:
        chunk = raw.recv(4096)
        if not chunk:
            break
    print("ok leave")


def main():
    mode, addr = sys.argv[1], sys.argv[2]
    rest = sys.argv[3:]
    if mode == "echo":
        ca, version, sizes = rest[0], rest[1], [int(s) for s in rest[2:]]
        ctx = context(ca, version)
        for size in sizes:
            echo_once(addr, ctx, os.urandom(size), version)
        print("ok echo", version, sizes)
    elif mode == "half-close":
        half_close(addr, rest[0], int(rest[1]))
    elif mode == "many":
        many(addr, rest[0], int(rest[1]))
    elif mode == "resume":
        resume(addr, rest[0])
    elif mode == "plain":
        plain(addr)
    elif mode == "chat":
        chat(addr, rest[0])
    elif mode == "leave":
        leave(addr, rest[:1] == ["ccs"])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
