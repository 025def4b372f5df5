"""A client whose request body never finishes: sends a POST head announcing 100 bytes, then one
byte, then waits. Prints the status line it gets and the seconds it waited, or "none" after
SECONDS. Usage: slow_body.py ADDRESS PORT HOST PATH SECONDS"""
import socket
import ssl
import sys
import time

address, port, host, path, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((address, port), timeout=seconds)
s = ctx.wrap_socket(raw, server_hostname=host)
head = (
    f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
)
s.sendall(head.encode())
start = time.monotonic()
try:
    data = s.recv(4096)
except (socket.timeout, OSError):
    data = b""
took = time.monotonic() - start
line = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "none"
print(f"{line}|{took:.1f}", flush=True)
