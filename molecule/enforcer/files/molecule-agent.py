"""A stand-in AI agent: every second, try one destination its policy allows (127.0.0.1:9, where
nothing listens: ECONNREFUSED) and one it does not (192.0.2.1:443: EPERM from the enforcer's
cgroup/connect4 program; without it, ENETUNREACH in a container with no network). Each round's
errnos go to /run/molecule-agent/rounds as a JSON line."""

import errno
import json
import socket
import time


def attempt(address: str, port: int) -> str:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect((address, port))
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
    return "connected"


while True:
    line = json.dumps({"allowed": attempt("127.0.0.1", 9), "denied": attempt("192.0.2.1", 443)})
    with open("/run/molecule-agent/rounds", "a") as f:
        f.write(line + "\n")
    time.sleep(1)
