#!/usr/bin/env python3
"""Test-only control channel into the VM: the QEMU guest agent on a virtio serial port.

The appliance has no shell for admins and no sshd; the test reads the journal and runs
`stapsteen` and `systemctl` inside the guest through this channel, which is not a network
service and is untouched by the bastion's nftables table.

  qga.py SOCKET ping [--timeout S]          wait until the agent answers
  qga.py SOCKET exec [--timeout S] CMD      run CMD with /bin/sh -c; its stdout, stderr and exit
                                            status become ours (stdin is passed in)
"""

import base64
import json
import os
import random
import socket
import sys
import time


CALL_TIMEOUT = 30.0


class Agent:
    def __init__(self, path, deadline):
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        self.sock.connect(path)
        self.buf = b""

    def _read_json(self):
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
                line = line.strip(b"\xff \r")
                if line:
                    try:
                        return json.loads(line)
                    except ValueError:
                        continue
                continue
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("guest agent did not answer in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("guest agent closed the channel")
            self.buf += chunk

    def sync(self):
        # A fresh id, after a 0xff byte that makes the agent drop any half-read request; answers
        # to earlier clients' requests are skipped.
        ident = random.randrange(1, 2**31)
        self.sock.sendall(
            b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": ident}}).encode() + b"\n"
        )
        while True:
            msg = self._read_json()
            if msg.get("return") == ident:
                return

    def call(self, command, arguments=None):
        req = {"execute": command}
        if arguments is not None:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        # A live agent answers at once; an agent that went away (the guest is rebooting) never
        # will, so give up after CALL_TIMEOUT and let the caller retry.
        overall, self.deadline = self.deadline, min(self.deadline, time.monotonic() + CALL_TIMEOUT)
        try:
            msg = self._read_json()
        finally:
            self.deadline = overall
        if "error" in msg:
            raise RuntimeError(f"{command}: {msg['error']}")
        return msg.get("return")


def connect(path, deadline):
    """Connects and syncs, retrying until the deadline (the guest may still be booting)."""
    last = None
    while time.monotonic() < deadline:
        try:
            agent = Agent(path, min(deadline, time.monotonic() + 3))
            agent.sync()
            agent.deadline = deadline
            return agent
        except (OSError, TimeoutError, ConnectionError) as e:
            last = e
            time.sleep(0.2)
    raise TimeoutError(f"guest agent not reachable at {path}: {last}")


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    path, verb, rest = args[0], args[1], args[2:]
    timeout = 60.0
    if rest[:1] == ["--timeout"]:
        timeout, rest = float(rest[1]), rest[2:]
    deadline = time.monotonic() + timeout
    agent = connect(path, deadline)
    if verb == "ping":
        return 0
    if verb != "exec" or len(rest) != 1:
        sys.exit(__doc__)
    stdin = b"" if sys.stdin is None or os.isatty(0) else sys.stdin.buffer.read()
    arguments = {"path": "/bin/sh", "arg": ["-c", rest[0]], "capture-output": True}
    if stdin:
        arguments["input-data"] = base64.b64encode(stdin).decode()
    pid = agent.call("guest-exec", arguments)["pid"]
    while True:
        status = agent.call("guest-exec-status", {"pid": pid})
        if status.get("exited"):
            break
        if time.monotonic() > deadline:
            sys.stderr.write(f"qga: command still running after {timeout}s: {rest[0]}\n")
            return 124
        time.sleep(0.05)
    sys.stdout.buffer.write(base64.b64decode(status.get("out-data", "")))
    sys.stderr.buffer.write(base64.b64decode(status.get("err-data", "")))
    if "signal" in status:
        return 128 + status["signal"]
    return status.get("exitcode", 1)


if __name__ == "__main__":
    sys.exit(main())
