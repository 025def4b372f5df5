"""A client that asks for answers and never reads them: a small receive buffer, TLS, then N
pipelined GETs of PATH, and nothing read after. Prints "sent" and keeps the socket for
SECONDS (or until the server closes it). Usage: slow_read.py ADDRESS PORT HOST PATH N SECONDS"""
import socket
import ssl
import sys
import time

address, port, host, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
n, seconds = int(sys.argv[5]), float(sys.argv[6])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.settimeout(10)
raw.connect((address, port))
s = ctx.wrap_socket(raw, server_hostname=host)
request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
s.sendall(request * n)
print("sent", flush=True)
time.sleep(seconds)
