"""Headless Chromium driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`): no
websocket library, no network port. Chromium reads JSON commands on fd 3 and writes replies and events on
fd 4, each message ended by a NUL byte.

    with Chromium() as browser:
        page = browser.open("file:///.../report.html")
        value = browser.evaluate(page, "document.title")
        png = browser.screenshot(page)
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_TRAMPOLINE = ("import fcntl, os, sys\n"
               "r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 10) for fd in sys.argv[1:3])\n"
               "os.dup2(r, 3)\nos.dup2(w, 4)\nos.execv(sys.argv[3], sys.argv[3:])\n")


def chromium_exe() -> str | None:
    """The first Chromium-like browser on PATH (`M3CVC_CHROMIUM` overrides), else None."""
    exe = os.environ.get("M3CVC_CHROMIUM")
    if exe:
        return exe
    return next((found for found in map(shutil.which, NAMES) if found), None)


class Chromium:
    def __init__(self, exe: str | None = None, *, width: int = 1280, height: int = 900, timeout: float = 90.0):
        self.exe = exe or chromium_exe()
        if not self.exe:
            raise FileNotFoundError("no chromium on PATH")
        self.size = (width, height)
        self.timeout = timeout
        self._next = 0
        self._buffer = b""
        self._events: list[dict] = []

    def __enter__(self) -> "Chromium":
        self._profile = tempfile.mkdtemp(prefix="m3cvc-chromium-")
        cmd_r, self._cmd_w = os.pipe()  # we write commands; chromium reads fd 3
        self._out_r, out_w = os.pipe()  # chromium writes fd 4; we read
        # A small Python moves the pipes to fds 3 and 4, then becomes chromium (a preexec_fn would fork this
        # multithreaded JAX process; sh cannot name fds above 9).
        args = [sys.executable, "-c", _TRAMPOLINE, str(cmd_r), str(out_w), self.exe, "--headless", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--mute-audio", "--autoplay-policy=no-user-gesture-required", f"--window-size={self.size[0]},{self.size[1]}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run its sandbox as root (containers, CI)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(cmd_r, out_w))
        os.close(cmd_r)
        os.close(out_w)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------------------------ protocol

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._read_message(deadline))

    # ------------------------------------------------------------------------------------ pages

    def open(self, url: str) -> str:
        """A new tab showing `url` after its load event; returns the session to address it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.size[0], "height": self.size[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str):
        """The JSON value of a JavaScript expression (promises are awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                        session)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, session: str, *, full_page: bool = True) -> bytes:
        res = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page}, session)
        return base64.b64decode(res["data"])
