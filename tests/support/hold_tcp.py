"""Holds silent TCP connections to a server, then tries one more.

Usage: hold_tcp.py ADDRESS PORT BIND N SECONDS. Opens N connections from BIND and prints
"held N"; opens one more and prints "extra closed" when the server closes it within 2 s, else
"extra open"; then keeps the N open for SECONDS (or until the server closes them)."""
import socket
import sys
import time

address, port, bind, n, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
held = [socket.create_connection((address, port), timeout=5, source_address=(bind, 0)) for _ in range(n)]
print(f"held {len(held)}", flush=True)
extra = socket.create_connection((address, port), timeout=2, source_address=(bind, 0))
try:
    closed = extra.recv(1) == b""
except ConnectionResetError:
    closed = True
except socket.timeout:
    closed = False
print("extra closed" if closed else "extra open", flush=True)
time.sleep(seconds)
