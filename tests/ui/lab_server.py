"""A JupyterLab server of the project's environment and a headless Chromium, for the browser tests.

The server runs from this Python (``python -m jupyterlab``) on a free local port with a random token, serves
one folder, and keeps its configuration, data, runtime files, user settings and workspaces in a folder of its
own, so the user's Jupyter and IPython configuration, settings and workspaces are neither read nor changed.
It runs in a session of its own; ``stop()`` shuts its kernels down through its API, then ends the server and
every process it started.

Chromium is Debian's package (``chromium`` on the PATH, or ``CHROMIUM``), driven by Playwright with
``executable_path``: no browser is downloaded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}
"""User settings of the server: every cell of a notebook in the page, visible or not (so that the tests see
all outputs), a notebook's kernel started without asking, and no question about news covering the page."""


def chromium_path() -> str:
    """The system Chromium: ``$CHROMIUM``, else ``chromium`` on the PATH (``apt-get install chromium``)."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise FileNotFoundError(
            "no chromium on the PATH: install Debian's package (apt-get install chromium; `make test-ui` does) "
            "or set CHROMIUM to a Chromium executable"
        )
    return path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LabServer:
    """JupyterLab serving ``root``, with its own settings under ``home``.

    Args:
        root: the folder the file browser shows (notebooks are opened relative to it).
        home: a folder for the server's configuration, data, runtime files, settings and log.
        environment: environment variables of the server and its kernels set (str) or removed (None).
    """

    def __init__(self, root: Path, home: Path, environment: dict[str, str | None] | None = None) -> None:
        self.root, self.home = Path(root), Path(home)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.environment = dict(environment or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.home / "jupyterlab.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, notebook: str) -> str:
        """The page of ``notebook`` (a path under ``root``) in a fresh workspace."""
        return f"{self.base}/lab/tree/{notebook}?token={self.token}&reset"

    def api(self, path: str, method: str = "GET") -> Any:
        """A call to the server's REST API (``/api/...``); the decoded JSON answer (None when empty)."""
        request = urllib.request.Request(
            f"{self.base}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def start(self, timeout: float = 120.0) -> LabServer:
        """Start the server and wait until its API answers; raises RuntimeError (with the log) otherwise."""
        folders = {
            name: self.home / name
            for name in ("config", "data", "runtime", "ipython", "settings", "workspaces")
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        for plugin, values in SETTINGS.items():
            path = folders["settings"] / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        environment = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(folders["config"]),
            "JUPYTER_DATA_DIR": str(folders["data"]),
            "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
            "IPYTHONDIR": str(folders["ipython"]),
            **self.environment,
        }
        environment = {name: value for name, value in environment.items() if value is not None}
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={folders['settings']}",
            f"--LabApp.workspaces_dir={folders['workspaces']}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab stopped at start (exit {self.process.returncode}):\n{self.read_log()}"
                )
            try:
                self.api("status")
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(
            f"JupyterLab did not answer on port {self.port} within {timeout:.0f} s:\n{self.read_log()}"
        )

    def read_log(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.is_file() else ""

    def stop(self) -> None:
        """Shut the kernels down (API), then end the server and every process it started."""
        if self.process is None:
            return
        try:
            for kernel in self.api("kernels") or []:
                self.api(f"kernels/{kernel['id']}", method="DELETE")
        except (OSError, ValueError):
            pass  # the server is gone already: its processes are ended below
        stop_process_tree(self.process)
        self.process = None


def stop_process_tree(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """End ``process`` (started with ``start_new_session=True``), its session, and every process it started:
    kernels run in sessions of their own, so they are found as its descendants. SIGTERM, then SIGKILL."""
    import psutil

    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    for child in started:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(started, timeout=timeout)
    for child in alive:
        child.kill()
