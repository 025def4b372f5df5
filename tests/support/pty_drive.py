#!/usr/bin/env python3
"""Runs a command in a real pseudo-terminal and drives it like a person at a terminal.

Usage: pty_drive.py STEPS_JSON -- COMMAND...
Steps: ["send", text] | ["expect", text] | ["resize", rows, cols] | ["sleep", seconds].
Prints everything the terminal showed; exits with the command's exit status (or 90 when an
expected text did not appear within 15 seconds)."""
import fcntl, json, os, pty, select, signal, struct, sys, termios, time

def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

def main():
    sep = sys.argv.index("--")
    steps = json.loads(sys.argv[1])
    cmd = sys.argv[sep + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    set_size(fd, 24, 80)
    seen = b""
    def read_some(timeout):
        nonlocal seen
        r, _, _ = select.select([fd], [], [], timeout)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return False
            if not data:
                return False
            seen += data
            sys.stdout.buffer.write(data); sys.stdout.flush()
        return True
    pos = 0
    for step in steps:
        kind = step[0]
        if kind == "send":
            os.write(fd, step[1].encode())
        elif kind == "expect":
            want = step[1].encode()
            deadline = time.time() + 15
            while want not in seen[pos:]:
                if time.time() > deadline or not read_some(0.2):
                    if want in seen[pos:]:
                        break
                    sys.stderr.write("pty_drive: did not see %r\n" % step[1])
                    os.kill(pid, signal.SIGKILL)
                    sys.exit(90)
            pos = seen.index(want, pos) + len(want)
        elif kind == "resize":
            set_size(fd, step[1], step[2])
            os.kill(pid, signal.SIGWINCH)
        elif kind == "sleep":
            end = time.time() + step[1]
            while time.time() < end:
                read_some(0.1)
    deadline = time.time() + 30
    while time.time() < deadline and read_some(0.5):
        pass
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)

main()
