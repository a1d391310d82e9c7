"""Run the labeler's web app with uvicorn in a background thread, bound to 127.0.0.1 unless asked."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
import sys
import threading
import time
import warnings
import webbrowser
from pathlib import Path

from ..console import note
from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .worker import TuningWorker

log = logging.getLogger("finetuner.labeler")
LOOPBACK_NAMES = ("localhost",)


def bound_names(host: str) -> list[str]:
    """The Host header values the page accepts when bound to `host`: that address only; for a
    wildcard ("0.0.0.0", "::", "") this machine's name and addresses. Any other name (a DNS name
    an attacker points at this machine: DNS rebinding) is refused."""
    if host.strip("[]") not in ("0.0.0.0", "::", ""):
        return [host.strip("[]"), f"[{host.strip('[]')}]"] if ":" in host else [host]
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return sorted(n for n in names if n) + [f"[{n}]" for n in sorted(names) if ":" in n]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LabelerServer:
    """The page and API of a `Labeler`, served by uvicorn, plus its tuning worker.

    Args:
        labeler: the `Labeler`.
        host: interface to bind; default 127.0.0.1 (this machine only). Any other interface
            exposes the labels and the model to the network: it is used only when given here,
            with a warning, and requests must then name that address in their Host header
            (`bound_names`).
        port: TCP port; 0 picks a free one (read `port` / `url` after `start`).
        background_tuning: run the `TuningWorker` (False: rounds only on POST /api/train).
        min_new_sessions: labelled pages that trigger a round.
        max_body_bytes: largest accepted request body.
        token: the session token; default a fresh `secrets.token_urlsafe(32)` (256 bits).

    Raises:
        ValueError: port outside 0..65535.
    """

    def __init__(self, labeler, host: str = "127.0.0.1", port: int = 0, *, background_tuning: bool = True,
                 min_new_sessions: int = 1, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 token: str | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port: expected an int in 0..65535 (0 = any free port), got {port!r}")
        self.labeler, self.host, self._port = labeler, host, port
        self.token = token or secrets.token_urlsafe(32)
        self.worker = TuningWorker(labeler, min_new_sessions) if background_tuning else None
        hosts = None
        if not is_loopback(host):
            warnings.warn(f"host: binding the labeler to {host!r} exposes it beyond this machine; anyone who "
                          "can reach the port and learns the token can read the data and write labels. "
                          "Use the default 127.0.0.1 unless you need this.", stacklevel=2)
            hosts = bound_names(host)
        self.stopped = threading.Event()
        self.cancel_round = False  # set by POST /api/stop?cancel_round=true
        self.app = create_app(labeler, self.token, worker=self.worker, on_stop=self._on_stop,
                              allowed_hosts=hosts, max_body_bytes=max_body_bytes)
        self._server = None
        self._thread: threading.Thread | None = None

    def _on_stop(self, cancel_round: bool = False) -> None:
        self.cancel_round = self.cancel_round or cancel_round
        self.stopped.set()

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._server is not None and self._server.started:
            return self._server.servers[0].sockets[0].getsockname()[1]
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The page's address with the token in the fragment (never sent to the server)."""
        return f"{self.base_url}/#token={self.token}"

    def start(self, timeout: float = 30.0) -> "LabelerServer":
        """Start the worker and the server thread; return once the server accepts connections.

        Raises:
            RuntimeError: the server did not start within `timeout` seconds (e.g. port in use).
        """
        import uvicorn

        config = uvicorn.Config(self.app, host=self.host, port=self._port, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="finetuner-labeler-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"port: the labeler could not start on {self.host}:{self._port} "
                                   "(in use? try port=0 for a free one)")
            time.sleep(0.02)
        if self.worker is not None:
            self.worker.start()
        return self

    def stop(self, timeout: float = 60.0, cancel_round: bool | None = None) -> None:
        """Stop the server (waiting up to `timeout` s for open requests), then the worker: it
        waits for a running round to end, or cancels it (`cancel_round`; default: as the page's
        Finish asked). When this returns no round runs any more."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self.worker is not None:
            self.worker.stop(cancel=self.cancel_round if cancel_round is None else cancel_round)
        self.stopped.set()

    def write_link(self) -> Path:
        """Write the page's link (with the token) to OUTPUT_DIR/labeler-link.txt, readable by
        the owner only (mode 0600), and return the file's path."""
        path = Path(self.labeler.output_dir) / "labeler-link.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.url + "\n")
        os.chmod(path, 0o600)
        return path

    def serve_forever(self, open_browser: bool = True) -> None:
        """Start, tell the user where the page is, optionally open a browser, and block until
        the page's Finish button (POST /api/stop) or Ctrl-C; then stop.

        The link with the token is printed only to an interactive terminal; when output is
        redirected (a log file, CI) only the path of the 0600 link file is printed, so the
        token never lands in a log."""
        self.start()
        link_file = self.write_link()
        shown = self.url if sys.stdout.isatty() else f"the link in {link_file}"
        note(f"finetuner labeler at {self.base_url}/ : open {shown}\n  labels are saved to "
             f"{self.labeler.store.path}; press Ctrl-C or 'Finish' on the page to end")
        if open_browser:
            try:
                webbrowser.open(self.url)
            except Exception:  # no browser on this machine: the printed link is enough
                pass
        cancel = None
        try:
            while not self.stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            cancel = True  # Ctrl-C: do not wait for a round to finish
        finally:
            self.stop(cancel_round=cancel)
