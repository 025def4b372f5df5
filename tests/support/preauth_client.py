"""Hostile clients that never log in, for the pre-authentication tests.

Usage: preauth_client.py ADDRESS BIND SECONDS MODE...

Opens one connection per MODE from BIND to ADDRESS:22 and reads the server's version line on
each. Prints "refused I" for a connection closed before that line, then "ready N" (N got it),
then drives each connection by its mode and prints "closed I MODE SECS" when the server closes
it (SECS since it was opened), or "open I MODE" for one still open after SECONDS.

Modes: silent (sends nothing), version (only a version line), ignore (a version line, then an
SSH_MSG_IGNORE every second), half (a version line and half a packet), kexinit (a version line
and a KEXINIT, then nothing: a stalled key exchange)."""
import os
import select
import socket
import struct
import sys
import time


def packet(payload):
    pad = 8 - (5 + len(payload)) % 8
    if pad < 4:
        pad += 8
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + b"\0" * pad


def name_list(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def kexinit():
    lists = [
        "curve25519-sha256",
        "ssh-ed25519",
        "chacha20-poly1305@openssh.com",
        "chacha20-poly1305@openssh.com",
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com",
        "none",
        "none",
        "",
        "",
    ]
    body = bytes([20]) + os.urandom(16) + b"".join(name_list(x) for x in lists)
    return packet(body + b"\0" + b"\0\0\0\0")


IGNORE = packet(bytes([2]) + struct.pack(">I", 0))
VERSION = b"SSH-2.0-hostile\r\n"


def main():
    address, bind, seconds, modes = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
    conns = []
    for i, mode in enumerate(modes):
        s = socket.create_connection((address, 22), timeout=5, source_address=(bind, 0))
        opened = time.monotonic()
        line = b""
        while not line.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                break
            line += b
        if not line.endswith(b"\n"):
            print(f"refused {i}", flush=True)
            s.close()
            continue
        s.setblocking(False)
        conns.append({"i": i, "mode": mode, "sock": s, "opened": opened, "next": 0.0})
    print(f"ready {len(conns)}", flush=True)
    for c in conns:
        s, mode = c["sock"], c["mode"]
        if mode != "silent":
            s.sendall(VERSION)
        if mode == "half":
            s.sendall(struct.pack(">IB", 1000, 4) + b"\x14" * 5)
        elif mode == "kexinit":
            s.sendall(kexinit())
    deadline = time.monotonic() + seconds
    while conns and time.monotonic() < deadline:
        now = time.monotonic()
        for c in conns:
            if c["mode"] == "ignore" and now >= c["next"]:
                c["next"] = now + 1.0
                try:
                    c["sock"].send(IGNORE)
                except OSError:
                    pass
        readable, _, _ = select.select([c["sock"] for c in conns], [], [], 0.2)
        for c in [c for c in conns if c["sock"] in readable]:
            try:
                data = c["sock"].recv(65536)
            except OSError:
                data = b""
            if not data:
                secs = time.monotonic() - c["opened"]
                print(f"closed {c['i']} {c['mode']} {secs:.1f}", flush=True)
                c["sock"].close()
                conns.remove(c)
    for c in conns:
        print(f"open {c['i']} {c['mode']}", flush=True)


main()
