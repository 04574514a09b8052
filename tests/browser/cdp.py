"""A headless Chromium driven over the DevTools protocol (aiohttp's websocket client: aiohttp ships
with mlflow, so nothing is added). Only what the UI check needs: open a URL, wait until a script
says the page is ready, read values from the page, click, and take a screenshot."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_chromium() -> str:
    """The Debian `chromium` binary, installed with apt-get where missing (CI runs as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    print("chromium missing: apt-get install -y chromium", flush=True)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "fonts-dejavu-core"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("chromium: not on PATH after apt-get install chromium")
    return found


def _get_json(url: str, method: str = "GET"):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


class Browser:
    """One Chromium process with a fresh profile, and one page tab driven over its websocket."""

    def __init__(self, width: int = 1800, height: int = 1000, shots: Path | None = None):
        self.size, self.shots = (width, height), shots  # shots: where a page that never got ready is pictured
        self.profile = tempfile.mkdtemp(prefix="opdpipe-chromium-")
        self.port = free_port()
        self.proc = None
        self.ids = itertools.count(1)

    async def __aenter__(self) -> "Browser":
        binary = ensure_chromium()
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}",
                                      f"--remote-debugging-port={self.port}", "--remote-allow-origins=*",
                                      f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, "TMPDIR": self.profile})  # its singleton socket dir too
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                tabs = [t for t in _get_json(f"{base}/json/list") if t["type"] == "page"]
                if tabs:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self._stop()
                raise RuntimeError(f"chromium did not open its DevTools port {self.port}")
            await asyncio.sleep(0.3)
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(tabs[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()
        await self.session.close()
        self._stop()

    def _stop(self) -> None:
        """End Chromium's whole process group (start_new_session): a renderer or helper left running
        would write into the profile after it is removed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is still running
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def send(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive(timeout=60)).data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def evaluate(self, script: str):
        res = await self.send("Runtime.evaluate", expression=script, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def open(self, url: str, ready: str, timeout: float = 90) -> float:
        """Navigate, then poll the `ready` script until it is truthy; returns the seconds it took."""
        t0 = time.monotonic()
        await self.send("Page.navigate", url=url)
        guarded = f"(() => {{ try {{ return Boolean({ready}); }} catch (e) {{ return false; }} }})()"
        while not await self.evaluate(guarded):
            if time.monotonic() - t0 > timeout:
                if self.shots:
                    await self.screenshot(self.shots / f"timeout-{int(time.time())}.png")
                raise TimeoutError(f"{url}: not ready after {timeout:.0f} s ({ready})")
            await asyncio.sleep(0.5)
        return time.monotonic() - t0

    async def screenshot(self, path: Path) -> None:
        data = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))
