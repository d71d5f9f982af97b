"""Is a JACK server there to talk to? Asked without hanging, starting one, or printing.

Context: setup and control (never the real-time thread): :func:`probe_server` starts a
child process and waits for it.

Why a child process: asking JACK in-process is unsafe in three ways, all measured with
python-rtmidi 1.5.8 (RtMidi 5.0.0, which bundles its own jack2 ``libjack``):

- a JACK server that is stopped or hung (``kill -STOP``, a wedged driver) makes
  ``jack_client_open`` wait forever: a ``MidiOut(API_UNIX_JACK)`` never returned in 60 s;
  a child process can be killed after a timeout, the caller's own thread cannot;
- with no server, ``libjack`` writes five lines to file descriptor 2 ("Cannot connect
  to server socket ...", "jack server is not running or cannot be started", ...), below
  Python's ``sys.stderr``; the child's stderr is captured and only logged at debug level;
- ``libjack`` keeps per-process state after a failed open; the child takes it away.

RtMidi opens its JACK clients with ``JackNoStartServer``, so no server is ever started
by a probe (checked: no ``jackd`` appears, nothing is added to ``/dev/shm``); the child
also gets ``JACK_NO_START_SERVER=1`` in case another ``libjack`` is loaded. A probe
costs 70 to 130 ms (Python start-up plus one client open and close).

Written by hand because no maintained library answers "is JACK usable" without
creating a client in the asking process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

#: What a user can run when no JACK server is there.
START_HINT = "start one with `jackd -d alsa` (a sound card) or `jackd -d dummy -r 48000` (no sound card)"

#: The child: open one JACK client through python-rtmidi (the library the ports use, with
#: its own bundled libjack), close it, print one word. Only the stdlib and rtmidi.
_PROBE_SCRIPT = """
import sys
try:
    import rtmidi
except Exception as err:
    print("import-error", err)
    sys.exit(3)
if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
    print("not-compiled")
    sys.exit(4)
try:
    client = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "livegen-probe")
except Exception as err:
    print("error", err)
    sys.exit(2)
client.delete()
print("ok")
"""


def server_name() -> str:
    """The JACK server a client of this process would talk to (``JACK_DEFAULT_SERVER``)."""
    return os.environ.get("JACK_DEFAULT_SERVER") or "default"


def _which_server() -> str:
    name = server_name()
    return "the default JACK server" if name == "default" else f"the JACK server '{name}' (JACK_DEFAULT_SERVER)"


def probe_server(timeout: float = 5.0) -> str | None:
    """Return ``None`` when a JACK client can be opened now, else why not (one sentence).

    Setup context; blocks for at most ``timeout`` seconds plus the time to kill the child.
    """
    env = dict(os.environ)
    env["JACK_NO_START_SERVER"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE_SCRIPT],  # isolated: nothing from the working directory
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            f"{_which_server()} did not answer within {timeout:g} s: it is stopped or hung; "
            f"restart it (stop the jackd process, then {START_HINT.removeprefix('start one with ')})"
        )
    except OSError as err:
        return f"could not run the JACK probe ({sys.executable}: {err})"
    if done.stderr:
        log.debug("JACK probe stderr: %s", done.stderr.strip())
    answer = done.stdout.strip()
    if done.returncode == 0 and answer == "ok":
        return None
    if answer.startswith("not-compiled"):
        return "python-rtmidi on this machine was built without JACK support"
    if answer.startswith("import-error"):
        return f"python-rtmidi cannot be imported by {sys.executable}: {answer.removeprefix('import-error ')}"
    if "not running" in answer or "cannot be started" in done.stderr:
        name = server_name()
        if name == "default":
            return f"no JACK server is running: {START_HINT}"
        return (
            f"no JACK server named '{name}' is running (JACK_DEFAULT_SERVER={name}): start it with "
            f"`jackd -n {name} -d dummy -r 48000`, or unset JACK_DEFAULT_SERVER to use the default server"
        )
    stderr_lines = done.stderr.strip().splitlines()
    detail = answer.removeprefix("error ") or (stderr_lines[-1] if stderr_lines else f"exit status {done.returncode}")
    return f"a JACK client cannot be opened on {_which_server()}: {detail}"
