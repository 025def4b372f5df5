#!/usr/bin/env python3
"""Keystroke echo round trip: types one character at a time into COMMAND (an ssh session with a
remote pty) and times until the remote echo arrives. Prints p50 and p99 in milliseconds as JSON.

Usage: echo_rtt.py SAMPLES -- COMMAND..."""
import json, os, pty, select, sys, time

samples = int(sys.argv[1])
cmd = sys.argv[sys.argv.index("--") + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)

def read_until(token, timeout=15):
    buf = b""
    end = time.time() + timeout
    while token not in buf:
        r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
        if not r:
            sys.exit("echo_rtt: timed out waiting for %r; the terminal showed %r" % (token, buf[-400:]))
        buf += os.read(fd, 4096)
    return buf

read_until(b"READY")
times = []
for i in range(samples):
    ch = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
    t0 = time.perf_counter()
    os.write(fd, ch)
    read_until(ch)
    times.append((time.perf_counter() - t0) * 1000)
os.write(fd, b"\x04")
times.sort()
print(json.dumps({"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99) - 1]}))
os.kill(pid, 9)
