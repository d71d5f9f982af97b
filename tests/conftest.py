"""Shared fixtures: a real JACK server with the dummy driver, and tiny trained packages.

Context: test setup. One jackd is started per test session (about 1 s) the first time a
test asks for ``jack_server``; each test that asks gets ``JACK_DEFAULT_SERVER`` pointing
at it for its own duration only, because libjack reads that variable whenever a client
is opened, in this process (rtmidi, PortAudio) and in the children it starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.jackutil import JackServer, find_jackd

JACKD_MISSING = "jackd not installed: run `make setup` (Debian package jackd2)"


@pytest.fixture(scope="session", autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Crash journals go to the session's own folder, never the user's ``~/.local/state/livegen``
    (a test that kills a jam leaves one; the jams it starts inherit the variable)."""
    saved = os.environ.get("LIVEGEN_STATE_DIR")
    os.environ["LIVEGEN_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LIVEGEN_STATE_DIR", None)
        else:
            os.environ["LIVEGEN_STATE_DIR"] = saved


@pytest.fixture(scope="session")
def jack_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JackServer]:
    """The session's jackd (``-d dummy -r 48000 -p 128``), stopped by its PID at the end."""
    jackd = find_jackd()
    if jackd is None:
        pytest.skip(JACKD_MISSING)
    name = f"livegen-test-{os.getpid()}-{secrets.token_hex(3)}"
    server = JackServer(jackd, name, tmp_path_factory.mktemp("jackd"))
    server.start()
    try:
        try:
            server.wait_ready(timeout=20.0)
        except RuntimeError as err:
            pytest.fail(f"the test JACK server did not come up: {err}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def jack_server(jack_server_process: JackServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a running JACK dummy server, set as ``JACK_DEFAULT_SERVER`` for this test."""
    server = jack_server_process
    if not server.running():
        pytest.fail(f"the test JACK server {server.name} died; its output:\n{server.log_text()}", pytrace=False)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    yield server.name
    if not server.running():
        pytest.fail(f"the test JACK server {server.name} died during the test:\n{server.log_text()}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_packages(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A family's tiny trained package (:func:`tests.families.build`), built the first time a test
    of the session asks for it; tests that change one work on a copy."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            pytest.importorskip("torch", reason="training tests need the train extra: pip install -e '.[train]'")
            from tests.families import build

            data, out = tmp_path_factory.mktemp(f"{family}-data"), tmp_path_factory.mktemp(family)
            built[family] = build(family, data, out)
        return built[family]

    return get
