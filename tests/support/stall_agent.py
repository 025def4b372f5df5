"""An SSH agent that offers a key and never signs: a client stalled before its signature, as
a stock ssh at a passphrase prompt or a security key never touched would be.

Usage: stall_agent.py SOCKET PUBLIC_KEY_FILE. Prints "sign requested" when asked to sign."""
import base64
import os
import socket
import struct
import sys
import threading


def serve(conn, blob):
    while True:
        head = conn.recv(4, socket.MSG_WAITALL)
        if len(head) < 4:
            return
        (n,) = struct.unpack(">I", head)
        msg = conn.recv(n, socket.MSG_WAITALL)
        if not msg:
            return
        if msg[0] == 11:  # REQUEST_IDENTITIES
            body = bytes([12]) + struct.pack(">I", 1)
            body += struct.pack(">I", len(blob)) + blob + struct.pack(">I", 0)
        elif msg[0] == 13:  # SIGN_REQUEST: never answered
            print("sign requested", flush=True)
            threading.Event().wait()
        else:  # extensions (session-bind) and the rest
            body = bytes([5])
        conn.sendall(struct.pack(">I", len(body)) + body)


def main():
    path, pub = sys.argv[1], sys.argv[2]
    blob = base64.b64decode(open(pub).read().split()[1])
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, blob), daemon=True).start()


main()
