"""A TCP server for the forwarding tests and benchmark: echoes each connection (or, with --sink,
discards it) until the client's EOF, then closes. Usage: tcp_echo.py ADDRESS PORT [--sink]"""
import socket
import socketserver
import sys


SINK = "--sink" in sys.argv[3:]


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        buf = bytearray(1 << 20)
        while True:
            n = self.request.recv_into(buf)
            if not n:
                break
            if not SINK:
                self.request.sendall(memoryview(buf)[:n])
        self.request.shutdown(socket.SHUT_WR)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


with Server((sys.argv[1], int(sys.argv[2])), Echo) as server:
    print("listening", flush=True)
    server.serve_forever()
