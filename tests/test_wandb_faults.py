"""W&B that cannot start never costs a run: a server that answers the reachability probe but
hangs on the API, or a WANDB_MODE that W&B rejects, sends the job offline with one line (it used
to fail the run untrained after minutes, or at once, with a long traceback)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb

from tests.conftest import REPO, SHRINK
from vae_lab.records.tracking import wandb_ids, wandb_logger

#: the seconds W&B may take to start a run in these tests (logger.init_timeout)
INIT_TIMEOUT_S = 3


class ProbeOnly(http.server.BaseHTTPRequestHandler):
    """Answers the reachability probe (HEAD), then holds every API request unanswered until
    the server closes."""

    stop = threading.Event()

    def do_HEAD(self) -> None:  # noqa: N802 -- http.server's name
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.stop.wait(60)  # bounded: never outlives a test for long

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """The URL of a ``ProbeOnly`` server on the loopback, for the test's length."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ProbeOnly)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    ProbeOnly.stop.set()
    server.shutdown()
    server.server_close()


def wandb_env(home: Path, **values: str) -> dict[str, str]:
    """The environment less W&B's variables, its folders under ``home``, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_CONFIG_DIR=str(home / "config"), WANDB_DATA_DIR=str(home / "data"),
               WANDB_CACHE_DIR=str(home / "cache"), WANDB_SILENT="true", OMP_NUM_THREADS="1",
               **values)  # fmt: skip
    return env


@pytest.mark.slow  # a whole run against the hanging server: make test-full
def test_a_server_that_hangs_on_the_api_means_offline(tmp_path, hanging_server):
    run_dir = tmp_path / "run"
    env = wandb_env(tmp_path, WANDB_API_KEY="0" * 40, WANDB_BASE_URL=hanging_server)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", *SHRINK[:-1], "logger=wandb",
         f"logger.init_timeout={INIT_TIMEOUT_S}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - start < 60  # W&B alone used to hold it 127 s before failing it
    assert "Traceback" not in result.stderr
    (said,) = [line for line in result.stderr.splitlines() if line.startswith("W&B")]
    assert said.startswith("W&B: W&B could not start the run online (CommError: ")
    assert said.endswith(
        f"logging offline, upload later with: wandb sync {run_dir}/wandb/offline-run-*"
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["wandb_mode"] == "offline"
    assert list((run_dir / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("value", ["", "bogus"])
def test_an_empty_or_bad_wandb_mode_means_offline(
    value, tmp_path, hanging_server, monkeypatch, capfd
):
    """Logged in to a server that hangs on the API: an empty WANDB_MODE is unset, so the run
    tries online and goes offline (W&B used to reject it with a traceback); a bad one is said in
    one line and the run is offline at once."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    env = wandb_env(
        tmp_path, WANDB_MODE=value, WANDB_API_KEY="0" * 40, WANDB_BASE_URL=hanging_server
    )
    for key, env_value in env.items():
        monkeypatch.setenv(key, env_value)
    try:
        ids = wandb_ids(wandb_logger(str(tmp_path), mode="auto", init_timeout=1))
    finally:
        wandb.finish()
        wandb.teardown()
    assert ids["wandb_mode"] == "offline"
    (said,) = [line for line in capfd.readouterr().err.splitlines() if line.startswith("W&B")]
    if value:
        assert said == (
            "W&B: WANDB_MODE='bogus' is not a W&B mode (online, offline, disabled); logging offline"
        )
    else:
        assert said.startswith("W&B: W&B could not start the run online (CommError: ")
