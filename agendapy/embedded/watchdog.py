"""The script of the small process that stops an embedded server whose owner died."""

# Runs in its own small process next to each server. Its stdin is the read end of a pipe whose write
# end only the owning process holds, so EOF means the owner is gone however it died (SIGKILL, os._exit,
# a default SIGTERM): then it stops the server. A plain atexit hook covers none of those cases, and
# PR_SET_PDEATHSIG is tied to the *thread* that forked (a server started from asyncio.to_thread would
# die with that worker thread) and needs a preexec_fn, which is unsafe in threaded programs.
_WATCHDOG = """\
# agendapy: embedded-server watchdog (stops the server when its owner dies)
import os, signal, socket, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pid, grace, host, port = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sys.stdin.buffer.read()
def alive():
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:
        return True
def serving():
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True
def send(sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
if alive():
    send(signal.SIGTERM)
    signalled = time.monotonic()
    deadline = signalled + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
        if serving() and time.monotonic() - signalled > 0.5:  # see EmbeddedServer._terminate
            send(signal.SIGTERM)
            signalled = time.monotonic()
    if alive():
        send(signal.SIGKILL)
"""
