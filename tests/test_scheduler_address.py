"""`--scheduler` at something that is not a Dask scheduler fails within the stated timeout, and a
malformed address fails at once with one line.

Before, a port where an HTTP server listens kept distributed.Client waiting (over 150 s with a 30 s
timeout: its timeout covers the TCP connection, which the HTTP server accepts), and a malformed
address printed its line but exited 65 s later with an "Exception ignored" traceback.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest

from bnlab.train import cluster


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_http_server_is_not_a_scheduler_and_fails_within_the_timeout(http_server):
    import distributed  # noqa: F401 -- imported before the clock starts

    start = time.monotonic()
    with (
        pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at .* within 3 s .*no Dask answer"),
        cluster.connect(http_server, 1, timeout_s=3.0),
    ):
        pass
    assert time.monotonic() - start < 3.0 + 2.0  # the timeout plus the probe's thread and loop


@pytest.mark.parametrize("address", ["banana", "tcp://host:notaport", "http://127.0.0.1:80"])
def test_a_malformed_address_fails_at_once(address):
    import distributed  # noqa: F401

    start = time.monotonic()
    with (
        pytest.raises(ConnectionError, match="expected a Dask scheduler address like tcp://host:8786"),
        cluster.connect(address, 1, timeout_s=30.0),
    ):
        pass
    assert time.monotonic() - start < 5.0


def test_the_command_line_says_one_line_and_nothing_at_exit(tmp_path):
    env = {**os.environ, "BNLAB_STORE": str(tmp_path / "runs.sqlite")}
    out = subprocess.run(
        [sys.executable, "-m", "bnlab", "train", "--scheduler", "banana"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        (
            "bnlab train: expected a Dask scheduler address like tcp://host:8786 (got 'banana'): missing port "
            "number in address 'banana'"
        )
    ]
