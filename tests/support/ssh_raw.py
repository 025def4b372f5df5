#!/usr/bin/env python3
"""A deliberately small SSH client for tests/hostile.rs: it speaks just enough of the protocol to
misbehave on purpose, which a real client (OpenSSH, russh) refuses to do.

What it speaks: the version exchange; the binary packet protocol in clear text and, after a key
exchange, encrypted with aes128-gcm@openssh.com (RFC 5647 as OpenSSH does it: the packet length is
authenticated, not encrypted); curve25519-sha256 key exchange (RFC 8731) with OpenSSH's strict kex
marker; the ssh-userauth service with publickey authentication signed by an SSH agent (the
software security key); and the connection messages the floods need. It does not check the
server's host key: these attacks are about what the server does, not about who it is.

Usage: ssh_raw.py ATTACK JSON_ARGS. An attack prints {"started": true} once it is under way (the
test then probes the bastion, and creates the file JSON_ARGS["stop"] when done), and at the end one
JSON line with what it observed (counts, times, outcomes); the Rust test asserts on that. Every
loop is bounded in count and time.
All connections are made from the source address in JSON_ARGS["src"] (an address inside the
test's admin namespace), to JSON_ARGS["host"]:22.
"""
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import serialization

# Message numbers (RFC 4250).
DISCONNECT, IGNORE, SERVICE_REQUEST, SERVICE_ACCEPT = 1, 2, 5, 6
EXT_INFO = 7
KEXINIT, NEWKEYS, KEX_ECDH_INIT, KEX_ECDH_REPLY = 20, 21, 30, 31
USERAUTH_REQUEST, USERAUTH_FAILURE, USERAUTH_SUCCESS, USERAUTH_BANNER, USERAUTH_PK_OK = 50, 51, 52, 53, 60
GLOBAL_REQUEST, REQUEST_SUCCESS = 80, 81
CHANNEL_OPEN, CHANNEL_OPEN_CONFIRMATION, CHANNEL_OPEN_FAILURE = 90, 91, 92
CHANNEL_WINDOW_ADJUST, CHANNEL_DATA, CHANNEL_CLOSE, CHANNEL_REQUEST = 93, 94, 97, 98

VERSION = b"SSH-2.0-hostile_test"


# --- encoding (RFC 4251 section 5) ---

def u32(n):
    return struct.pack(">I", n)


def string(b):
    if isinstance(b, str):
        b = b.encode()
    return u32(len(b)) + b


def mpint(b):
    """A non-negative integer given as big-endian bytes."""
    b = b.lstrip(b"\0")
    if b and b[0] & 0x80:
        b = b"\0" + b
    return string(b)


def boolean(v):
    return b"\1" if v else b"\0"


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def u32(self):
        self.pos += 4
        return struct.unpack(">I", self.data[self.pos - 4:self.pos])[0]

    def string(self):
        n = self.u32()
        self.pos += n
        return self.data[self.pos - n:self.pos]


class Closed(Exception):
    """The server closed the connection (or reset it)."""


# --- one connection ---

class Conn:
    def __init__(self, args, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind((args["src"], 0))
        self.sock.settimeout(timeout)
        self.sock.connect((args["host"], 22))
        self.buf = b""
        self.server_version = None
        self.enc = None  # (AESGCM, fixed iv, counter) for each direction once keys are in use
        self.dec = None
        self.session_id = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def raw(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("eof")
            self.buf += chunk

    def _take(self, n):
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_version(self):
        """The server's identification line (lines before it are allowed by RFC 4253 4.2)."""
        while True:
            while b"\n" not in self.buf:
                if len(self.buf) > 8192:
                    raise Closed("no version line")
                self._fill(len(self.buf) + 1)
            line, self.buf = self.buf.split(b"\n", 1)
            if line.startswith(b"SSH-"):
                self.server_version = line.rstrip(b"\r")
                return self.server_version

    def hello(self):
        self.raw(VERSION + b"\r\n")
        return self.read_version()

    # Binary packet protocol (RFC 4253 section 6).
    def packet(self, payload):
        block = 16 if self.enc else 8
        # Clear text: the length field counts towards the block; with AES-GCM it does not.
        head = 1 if self.enc else 5
        pad = block - (head + len(payload)) % block
        if pad < 4:
            pad += block
        body = bytes([pad]) + payload + os.urandom(pad)
        if self.enc:
            aead, iv, n = self.enc
            nonce = iv[:4] + (int.from_bytes(iv[4:], "big") + n).to_bytes(8, "big")[-8:]
            self.enc = (aead, iv, n + 1)
            length = u32(len(body))
            data = length + aead.encrypt(nonce, body, length)
        else:
            data = u32(len(body)) + body
        return data

    def send(self, payload):
        self.raw(self.packet(payload))

    def recv(self):
        length = struct.unpack(">I", self._take(4))[0]
        if length > 256 * 1024:
            raise Closed(f"server sent packet_length {length}")
        if self.dec:
            aead, iv, n = self.dec
            nonce = iv[:4] + (int.from_bytes(iv[4:], "big") + n).to_bytes(8, "big")[-8:]
            self.dec = (aead, iv, n + 1)
            body = aead.decrypt(nonce, self._take(length + 16), u32(length))
        else:
            body = self._take(length)
        pad = body[0]
        return body[1:len(body) - pad]

    def recv_skip(self):
        """The next packet that is not IGNORE, DEBUG, EXT_INFO or a banner."""
        while True:
            p = self.recv()
            if p[0] not in (IGNORE, 4, EXT_INFO, USERAUTH_BANNER):
                return p

    # Key exchange.
    def kexinit(self, strict=True):
        kex = "curve25519-sha256" + (",kex-strict-c-v00@openssh.com" if strict else "")
        names = [kex, "ssh-ed25519", "aes128-gcm@openssh.com", "aes128-gcm@openssh.com",
                 "hmac-sha2-256-etm@openssh.com", "hmac-sha2-256-etm@openssh.com",
                 "none", "none", "", ""]
        return bytes([KEXINIT]) + os.urandom(16) + b"".join(string(n) for n in names) + b"\0" + u32(0)

    def ecdh_init(self):
        self.x25519 = X25519PrivateKey.generate()
        self.q_c = self.x25519.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return bytes([KEX_ECDH_INIT]) + string(self.q_c)

    def server_kexinit(self):
        p = self.recv_skip()
        if p[0] != KEXINIT:
            raise Closed(f"expected KEXINIT, got {p[0]}")
        self.i_s = p
        return p

    def kex(self):
        """A full key exchange; afterwards every packet is encrypted."""
        self.server_kexinit()
        self.i_c = self.kexinit()
        self.send(self.i_c)
        self.send(self.ecdh_init())
        reply = self.recv_skip()
        if reply[0] != KEX_ECDH_REPLY:
            raise Closed(f"expected KEX_ECDH_REPLY, got {reply[0]}")
        r = Reader(reply[1:])
        k_s, q_s = r.string(), r.string()
        shared = self.x25519.exchange(X25519PublicKey.from_public_bytes(q_s))
        h = hashlib.sha256(
            string(VERSION) + string(self.server_version) + string(self.i_c) + string(self.i_s)
            + string(k_s) + string(self.q_c) + string(q_s) + mpint(shared)).digest()
        self.session_id = h
        k = mpint(shared)

        def derive(letter, size):
            out = hashlib.sha256(k + h + letter + h).digest()
            while len(out) < size:
                out += hashlib.sha256(k + h + out).digest()
            return out[:size]
        self.send(bytes([NEWKEYS]))
        p = self.recv_skip()
        if p[0] != NEWKEYS:
            raise Closed(f"expected NEWKEYS, got {p[0]}")
        # Strict kex starts sequence numbers again at zero here; AES-GCM's nonce is its own
        # counter, not the sequence number, so this client need not count packets.
        self.enc = (AESGCM(derive(b"C", 16)), derive(b"A", 12), 0)
        self.dec = (AESGCM(derive(b"D", 16)), derive(b"B", 12), 0)

    def userauth_service(self):
        self.send(bytes([SERVICE_REQUEST]) + string("ssh-userauth"))
        p = self.recv_skip()
        if p[0] != SERVICE_ACCEPT:
            raise Closed(f"expected SERVICE_ACCEPT, got {p[0]}")

    def publickey_request(self, user, alg, blob, sig=None):
        msg = (bytes([USERAUTH_REQUEST]) + string(user) + string("ssh-connection")
               + string("publickey") + boolean(sig is not None) + string(alg) + string(blob))
        return msg + (string(sig) if sig is not None else b"")

    def signed_data(self, user, alg, blob):
        """What the client signs (RFC 4252 section 7)."""
        return (string(self.session_id) + bytes([USERAUTH_REQUEST]) + string(user)
                + string("ssh-connection") + string("publickey") + boolean(True) + string(alg)
                + string(blob))


# --- the software key, through the SSH agent protocol ---

class Agent:
    def __init__(self, path):
        self.path = path

    def _call(self, msg):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(self.path)
        s.sendall(u32(len(msg)) + msg)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise Closed("agent closed")
            data += chunk
        s.close()
        return data[4:]

    def key(self):
        """(algorithm name, public key blob) of the agent's first key."""
        r = self._call(bytes([11]))
        assert r[0] == 12, r
        rd = Reader(r[1:])
        assert rd.u32() >= 1
        blob = rd.string()
        return Reader(blob).string().decode(), blob

    def sign(self, blob, data):
        r = self._call(bytes([13]) + string(blob) + string(data) + u32(0))
        assert r[0] == 14, r
        return Reader(r[1:]).string()


def login(args, user="alice"):
    """A connection authenticated as `user` with the agent's key."""
    c = Conn(args)
    c.hello()
    c.kex()
    c.userauth_service()
    agent = Agent(args["agent"])
    alg, blob = agent.key()
    sig = agent.sign(blob, c.signed_data(user, alg, blob))
    c.send(c.publickey_request(user, alg, blob, sig))
    p = c.recv_skip()
    if p[0] != USERAUTH_SUCCESS:
        raise Closed(f"login refused: message {p[0]}")
    return c


def wait_closed(c, limit):
    """Seconds until the server closes `c`, reading (and dropping) what it sends; None if it
    is still open after `limit` seconds."""
    start = time.monotonic()
    c.sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if not c.sock.recv(65536):
                return time.monotonic() - start
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start
    return None


WINDOW = 2 * 1024 * 1024


def open_session(c, sender):
    return bytes([CHANNEL_OPEN]) + string("session") + u32(sender) + u32(WINDOW) + u32(32768)


# --- pacing: the test probes the bastion while an attack goes on ---

_started = False


def started():
    """Tells the test (one JSON line) that the attack is under way."""
    global _started
    if not _started:
        _started = True
        print(json.dumps({"started": True}), flush=True)


def stopping(args):
    return os.path.exists(args["stop"])


def rounds(args):
    """Round numbers: at least `tries`, and on until the test has probed (its stop file exists);
    never more than 20 x `tries` nor longer than `limit` seconds."""
    start = time.monotonic()
    i = 0
    while ((i < args["tries"] or not stopping(args)) and i < 20 * args["tries"]
           and time.monotonic() - start < args["limit"]):
        started()
        yield i
        i += 1


# --- the attacks ---

def attack_terrapin(args):
    """Strict kex: an IGNORE slipped into the initial key exchange (between our KEXINIT and
    KEX_ECDH_INIT, where Terrapin moves sequence numbers) must end the connection before the
    server answers the key exchange. Controls: the same exchange without the IGNORE is
    answered, and so is the IGNORE from a client that does not ask for strict kex (RFC 4253
    allows it there), so the refusal is strict kex at work."""
    out = {"tries": 0, "refused": 0, "control_answered": 0, "nonstrict_answered": 0}

    def exchange(strict, inject):
        c = Conn(args, timeout=3)
        try:
            c.hello()
            c.server_kexinit()
            c.send(c.kexinit(strict=strict))
            if inject:
                c.send(bytes([IGNORE]) + string("terrapin"))
            c.send(c.ecdh_init())
            return c.recv_skip()[0] == KEX_ECDH_REPLY
        except (Closed, socket.timeout):
            return False
        finally:
            c.close()

    for _ in rounds(args):
        out["tries"] += 1
        out["refused"] += not exchange(strict=True, inject=True)
        out["control_answered"] += exchange(strict=True, inject=False)
        out["nonstrict_answered"] += exchange(strict=False, inject=True)
    return out


def attack_versions(args):
    """A 10 000-byte version line, one without the newline, and malformed ones: each connection
    must be closed; `closed_s` is how long the longest took."""
    cases = [
        b"SSH-2.0-" + b"A" * 10000 + b"\r\n",
        b"SSH-2.0-" + b"B" * 10000,  # no end of line, then silence
        b"SSH-1.5-old\r\n",
        b"SSH-2.0\r\n",
        b"\x00\xff\x00garbage\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"x" * 10000 + b"\r\n",  # pre-version lines from a client are not allowed
    ]
    out = {"tries": 0, "closed": 0, "max_closed_s": 0.0, "open": []}
    for _ in rounds(args):
        for i, v in enumerate(cases):
            c = Conn(args, timeout=3)
            out["tries"] += 1
            try:
                c.raw(v)
            except Closed:
                pass
            t = wait_closed(c, args["limit"])
            c.close()
            if t is None:
                out["open"].append(i)
            else:
                out["closed"] += 1
                out["max_closed_s"] = max(out["max_closed_s"], t)
    return out


def attack_packets(args):
    """Oversize and truncated packets. packet_length 0xFFFFFFFF and 1 MiB (streamed in) must be
    refused without the server buffering them; half a packet then silence must be closed by the
    login grace. Control: a 35000-byte packet (RFC 4253 6.1's largest required size) is taken and
    the key exchange goes on after it."""
    out = {"tries": 0, "huge_closed": 0, "mib_closed": 0, "half_closed": 0,
           "max_half_closed_s": 0.0, "big_ok": 0, "max_huge_closed_s": 0.0}
    for _ in range(args["tries"]):
        out["tries"] += 1
        c = Conn(args, timeout=3)
        c.hello()
        c.raw(u32(0xFFFFFFFF) + os.urandom(64))
        t = wait_closed(c, args["limit"])
        out["huge_closed"] += t is not None
        out["max_huge_closed_s"] = max(out["max_huge_closed_s"],
                                       args["limit"] if t is None else t)
        c.close()

        c = Conn(args, timeout=3)
        c.hello()
        try:
            c.raw(u32(1 << 20) + b"\x04")
            for _ in range(16):
                c.raw(os.urandom(65536))
        except (Closed, socket.timeout, OSError):
            pass
        out["mib_closed"] += wait_closed(c, args["limit"]) is not None
        c.close()

        # 35000 bytes in all: an IGNORE whose payload fills it (sent before our KEXINIT, where
        # IGNORE is allowed), then a normal key exchange.
        c = Conn(args, timeout=5)
        c.hello()
        c.server_kexinit()
        # packet_length 34996: padding length 4, IGNORE, string of 34986 bytes, 4 bytes padding.
        c.raw(u32(34996) + bytes([4, IGNORE]) + string(b"\0" * 34986) + b"\0" * 4)
        c.i_c = c.kexinit(strict=False)
        c.send(c.i_c)
        c.send(c.ecdh_init())
        try:
            out["big_ok"] += c.recv_skip()[0] == KEX_ECDH_REPLY
        except (Closed, socket.timeout):
            pass
        c.close()

    # Half a packet, then silence (all at once, so the waits overlap).
    conns, refused = [], 0
    for _ in range(args["tries"]):
        try:
            c = Conn(args, timeout=3)
            c.hello()
            full = c.packet(c.kexinit())
            c.raw(full[:len(full) // 2])
            conns.append(c)
        except (Closed, OSError):
            refused += 1
    started()
    times = parallel_wait(conns, args["grace_limit"])
    out["half_closed"] = refused + sum(t is not None for t in times)
    out["max_half_closed_s"] = max((t for t in times if t is not None), default=None)
    return out


def parallel_wait(conns, limit):
    res = [None] * len(conns)

    def one(i):
        res[i] = wait_closed(conns[i], limit)
        conns[i].close()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(conns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res


def attack_stalled_kex(args):
    """Version and KEXINIT, then nothing: each connection must be closed by the login grace."""
    conns, refused = [], 0
    for _ in range(args["tries"]):
        try:
            c = Conn(args, timeout=3)
            c.hello()
            c.server_kexinit()
            c.send(c.kexinit())
            conns.append(c)
        except (Closed, OSError):
            refused += 1
    started()
    times = parallel_wait(conns, args["grace_limit"])
    return {"tries": args["tries"], "refused_at_once": refused,
            "closed": refused + sum(t is not None for t in times),
            "max_closed_s": max((t for t in times if t is not None), default=None)}


def attack_slow_preauth(args):
    """Clients that keep a connection alive without authenticating: `tries` that send their
    version line and nothing more, and `tries` that finish the key exchange and then send an
    IGNORE every second. The login grace must close every one of them."""
    version_only, trickle = [], []
    refused = 0
    for _ in range(args["tries"]):
        try:
            c = Conn(args, timeout=3)
            c.hello()
            version_only.append(c)
            c = Conn(args, timeout=3)
            c.hello()
            c.kex()
            trickle.append(c)
        except (Closed, OSError):
            refused += 1
    started()
    start = time.monotonic()
    open_ = {c: c in trickle for c in version_only + trickle}
    closed_after = []
    last_ignore = 0.0
    while open_ and time.monotonic() - start < args["grace_limit"]:
        now = time.monotonic()
        send_now = now - last_ignore >= 1.0
        if send_now:
            last_ignore = now
        for c, trickles in list(open_.items()):
            gone = False
            try:
                if trickles and send_now:
                    c.send(bytes([IGNORE]) + string("still here"))
                c.sock.settimeout(0)
                gone = c.sock.recv(65536) == b""
            except BlockingIOError:
                pass
            except (Closed, OSError):
                gone = True
            if gone:
                closed_after.append(time.monotonic() - start)
                c.close()
                del open_[c]
        time.sleep(0.1)
    for c in open_:
        c.close()
    return {"tries": 2 * args["tries"], "refused_at_once": refused,
            "closed": 2 * args["tries"] - len(open_),
            "version_only_open": sum(1 for t in open_.values() if not t),
            "trickle_open": sum(1 for t in open_.values() if t),
            "max_closed_s": max(closed_after, default=None)}


def attack_unsigned_key(args):
    """A key offered without a signature (a publickey query) gets PK_OK and nothing more: no
    USERAUTH_SUCCESS, a channel opened then is not confirmed, an empty signature does not log
    in. A client that stalls after PK_OK, as one waiting for a touch or a passphrase does, must
    be closed by the login grace (which frees its slot). Control: the same client with the
    agent's signature logs in and its channel is confirmed."""
    out = {"tries": 0, "queries": 0, "pk_ok": 0, "authenticated": 0, "channel_confirmed": 0,
           "empty_sig_success": 0, "control_login": 0, "control_channel": 0}
    agent = Agent(args["agent"])
    alg, blob = agent.key()

    def query():
        c = Conn(args, timeout=5)
        c.hello()
        c.kex()
        c.userauth_service()
        c.send(c.publickey_request("alice", alg, blob))
        p = c.recv_skip()
        out["queries"] += 1
        out["pk_ok"] += p[0] == USERAUTH_PK_OK
        out["authenticated"] += p[0] == USERAUTH_SUCCESS
        return c

    def outcome(c):
        """Reads until an answer to the last request; counts what must never happen."""
        c.sock.settimeout(2)
        try:
            while True:
                p = c.recv_skip()
                out["channel_confirmed"] += p[0] == CHANNEL_OPEN_CONFIRMATION
                out["empty_sig_success"] += p[0] == USERAUTH_SUCCESS
                if p[0] in (USERAUTH_FAILURE, USERAUTH_SUCCESS, CHANNEL_OPEN_FAILURE):
                    return
        except (Closed, socket.timeout):
            pass

    # Probes of what must never work, then clients that stall after PK_OK. A connection the
    # server refuses at once (a connection limit) counts as refused, and as closed.
    out["refused_at_once"] = 0
    for _ in range(args["probes"]):
        out["probes"] = out.get("probes", 0) + 1
        for misuse in ("channel", "empty signature"):
            try:
                c = query()
            except (Closed, OSError):
                out["refused_at_once"] += 1
                continue
            if misuse == "channel":
                c.send(open_session(c, 0))
            else:
                c.send(c.publickey_request("alice", alg, blob, sig=b""))
            outcome(c)
            c.close()
    stalled = []
    for _ in range(args["tries"]):
        out["tries"] += 1
        try:
            stalled.append(query())
        except (Closed, OSError):
            out["refused_at_once"] += 1
    started()
    times = parallel_wait(stalled, args["grace_limit"])
    out["stalled_closed"] = out["tries"] - len(stalled) + sum(t is not None for t in times)
    out["max_stalled_closed_s"] = max((t for t in times if t is not None), default=None)
    c = login(args)
    out["control_login"] = 1
    c.send(open_session(c, 0))
    out["control_channel"] = int(c.recv_skip()[0] == CHANNEL_OPEN_CONFIRMATION)
    c.close()
    return out


def attack_wrong_sig_alg(args):
    """A valid signature from the key, presented under another algorithm name (in the
    signature blob, or in the request while the blob says the key's own): never authenticated.
    Control: the unchanged signature logs in."""
    agent = Agent(args["agent"])
    alg, blob = agent.key()
    others = ["ssh-ed25519", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-256", "none"]
    out = {"tries": 0, "authenticated": 0, "refused": 0, "control_login": 0}
    for _ in rounds(args):
        for other in others:
            for where in ("signature", "request"):
                out["tries"] += 1
                c = Conn(args, timeout=5)
                c.hello()
                c.kex()
                c.userauth_service()
                req_alg = other if where == "request" else alg
                sig = agent.sign(blob, c.signed_data("alice", req_alg, blob))
                if where == "signature":
                    r = Reader(sig)
                    r.string()
                    sig = string(other) + sig[r.pos:]
                c.send(c.publickey_request("alice", req_alg, blob, sig))
                try:
                    p = c.recv_skip()
                    out["authenticated"] += p[0] == USERAUTH_SUCCESS
                    out["refused"] += p[0] == USERAUTH_FAILURE
                except (Closed, socket.timeout):
                    out["refused"] += 1
                c.close()
    login(args).close()
    out["control_login"] = 1
    return out


def flood(args, make):
    """Sends `make(c, i)` on an authenticated connection as fast as the server takes them,
    without reading its replies (so they pile up on the server's side unless it stops reading
    us), then reads what came back for a second. When the server closes the connection (it cut
    the flood) or stops taking messages for a second, the attacker logs in again and goes on,
    until `rounds` ends. `confirmed` is the most channel confirmations one connection got."""
    sent = connections = cut = blocked = confirmed = granted = 0
    it = rounds(args)
    exhausted = False
    start = time.monotonic()
    while not exhausted:
        c = login(args)
        connections += 1
        c.sock.settimeout(1)
        closed = False
        try:
            for i in it:
                c.send(make(c, i))
                sent += 1
            exhausted = True
        except socket.timeout:
            blocked += 1
        except (Closed, OSError):
            closed = True
        seen = {}
        try:
            while True:
                p = c.recv()
                seen[p[0]] = seen.get(p[0], 0) + 1
        except socket.timeout:
            pass
        except (Closed, OSError):
            closed = True
        c.close()
        cut += closed
        confirmed = max(confirmed, seen.get(CHANNEL_OPEN_CONFIRMATION, 0))
        granted += seen.get(REQUEST_SUCCESS, 0)
    return {"tries": sent, "seconds": round(time.monotonic() - start, 2),
            "connections": connections, "cut_by_server": cut, "blocked": blocked,
            "confirmed": confirmed, "granted": granted}


def attack_channel_flood(args):
    return flood(args, lambda c, i: open_session(c, i))


def attack_global_flood(args):
    kinds = [
        lambda: string("keepalive@openssh.com") + boolean(True),
        lambda: string("tcpip-forward") + boolean(True) + string("0.0.0.0") + u32(2222),
        lambda: string("no-such-request@example.org") + boolean(True) + os.urandom(512),
    ]
    return flood(args, lambda c, i: bytes([GLOBAL_REQUEST]) + kinds[i % 3]())


def attack_window_overflow(args):
    """Opens a session channel (window 2 MiB) and adjusts its window past 2^32-1: first by
    2^32 - 2 MiB + 4, which a server that wraps around would take as a window of 4 bytes, then
    by 0xFFFFFFFF; then runs a command on pacs01 in it. The server may close the connection; if
    it does not, the whole output must arrive (a window that wrapped would stall it)."""
    out = {"tries": 0, "served": 0, "closed": 0, "broken": 0}
    for _ in rounds(args):
        out["tries"] += 1
        c = login(args)
        c.send(open_session(c, 0))
        p = c.recv_skip()
        r = Reader(p[1:])
        r.u32()  # our channel number
        remote = r.u32()
        c.sock.settimeout(5)
        got = b""
        try:
            for amount in ((1 << 32) - WINDOW + 4, 0xFFFFFFFF):
                c.send(bytes([CHANNEL_WINDOW_ADJUST]) + u32(remote) + u32(amount))
            c.send(bytes([CHANNEL_REQUEST]) + u32(remote) + string("exec") + boolean(False)
                   + string("pacs01 echo window-ok-and-more-than-four-bytes"))
            while b"window-ok-and-more-than-four-bytes" not in got:
                p = c.recv_skip()
                if p[0] == CHANNEL_DATA:
                    got += Reader(p[5:]).string()
                elif p[0] in (CHANNEL_CLOSE, DISCONNECT):
                    break
        except socket.timeout:
            pass  # the output stalled: counted as broken below
        except (Closed, OSError):
            out["closed"] += 1
            c.close()
            continue
        c.close()
        if b"window-ok-and-more-than-four-bytes" in got:
            out["served"] += 1
        else:
            out["broken"] += 1
    return out


def attack_rapid_connects(args):
    """`tries` connections one after the other, each sending a version line and closing."""
    start = time.monotonic()
    done = refused = 0
    for _ in rounds(args):
        try:
            c = Conn(args, timeout=3)
            c.raw(VERSION + b"\r\n")
            c.close()
        except (OSError, Closed):
            refused += 1
        done += 1
    return {"tries": done, "refused": refused, "seconds": round(time.monotonic() - start, 2)}


def attack_half_open(args):
    """Keeps up to `tries` silent connections open for `limit` seconds, opening a new one each
    time the server closes one. Counts how many the server accepted (sent its version to) and
    how long the server let the first ones live."""
    start = time.monotonic()
    opened = accepted = 0
    conns = []
    closed_after = []
    while time.monotonic() - start < args["limit"]:
        while len(conns) < args["tries"] and opened < 4 * args["tries"]:
            try:
                c = Conn(args, timeout=1)
                c.opened = time.monotonic()
                c.sock.settimeout(0)
                conns.append(c)
                opened += 1
            except OSError:
                break
        started()
        if stopping(args) and time.monotonic() - start > args["hold"]:
            break
        time.sleep(0.1)
        keep = []
        for c in conns:
            try:
                data = c.sock.recv(65536)
                if data:
                    accepted += data.startswith(b"SSH-")
                    keep.append(c)
                else:
                    closed_after.append(time.monotonic() - c.opened)
                    c.close()
            except BlockingIOError:
                keep.append(c)
            except OSError:
                closed_after.append(time.monotonic() - c.opened)
                c.close()
        conns = keep
    for c in conns:
        c.close()
    return {"tries": opened, "accepted": accepted, "closed_by_server": len(closed_after),
            "max_closed_s": max(closed_after, default=None)}


def attack_fake_target(args):
    """Not an attack on the bastion but a hostile target: listens on args["listen"]:args["port"]
    and, to each connection, sends a version line and closes (a target that dies mid-handshake).
    Serves until killed."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args["listen"], args["port"]))
    srv.listen(64)
    print(json.dumps({"listening": True}), flush=True)
    while True:
        c, _ = srv.accept()
        try:
            c.sendall(b"SSH-2.0-OpenSSH_9.9\r\n")
            c.recv(100)
        except OSError:
            pass
        c.close()


ATTACKS = {name[len("attack_"):]: f for name, f in globals().items() if name.startswith("attack_")}

if __name__ == "__main__":
    name, params = sys.argv[1], json.loads(sys.argv[2])
    result = ATTACKS[name](params)
    print(json.dumps(result), flush=True)
