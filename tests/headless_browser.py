"""Open an HTML page in Debian's headless chromium and report what a reader would meet: console messages,
uncaught errors, images that did not decode, the volumes' rows and pictures, and the table's sort.

A copy of the page gets a small probe script as the first thing in ``<head>``; it records errors as they
happen and, on ``load``, writes a JSON summary into ``<pre id="probe-result">``, which ``--dump-dom`` returns.
Console messages are also read from chromium's log (``--enable-logging=stderr --v=0`` prints them as
``INFO:CONSOLE`` lines).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000")

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t.tagName ? ("resource failed: " + t.tagName) : ("error: " + e.message));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("rejection: " + e.reason); });
  window.addEventListener("load", function () {
    var out = {errors: errors, broken_images: [], images: [], rows: [], sorted_rows: [], sortable: null};
    Array.prototype.forEach.call(document.images, function (img) {
      var v = img.getAttribute("data-volume");
      if (!img.complete || img.naturalWidth === 0) { out.broken_images.push(v || img.alt || "?"); }
      else { out.images.push([v, img.getAttribute("data-kind"), img.naturalWidth, img.naturalHeight]); }
    });
    var table = document.getElementById("volumes");
    if (table) {
      out.sortable = table.getAttribute("data-sortable");
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        out.rows.push(r.getAttribute("data-volume"));
      });
      try {
        window.covsegSortBy("involvement");
        Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
          out.sorted_rows.push(r.getAttribute("data-volume"));
        });
      } catch (err) { out.errors.push("sort: " + err); }
    }
    var pre = document.createElement("pre");
    pre.id = "probe-result";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>"""


@dataclass
class PageCheck:
    """What the probe saw: ``errors`` (uncaught errors, failed resources), ``console`` (log lines),
    ``broken_images``, ``images`` ([volume, kind, width, height]), table ``rows`` before and after sorting."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: list[list] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    sorted_rows: list[str] = field(default_factory=list)
    sortable: str | None = None

    @property
    def problems(self) -> list[str]:
        """Everything that makes the page faulty: errors, console messages, broken images."""
        return self.errors + self.console + [f"broken image: {b}" for b in self.broken_images]


def chromium() -> str:
    """Path of the chromium binary; skips the test when it is absent."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium: apt-get install -y chromium)")
    return exe


def open_page(page: Path, work: Path, screenshot: Path | None = None) -> PageCheck:
    """Load a probed copy of ``page`` in headless chromium (empty profile under ``work``); return the check."""
    exe = chromium()
    work.mkdir(parents=True, exist_ok=True)
    text = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
    at = head.end() if head else 0
    probed = work / f"probed-{page.name}"
    probed.write_text(text[:at] + PROBE + text[at:], encoding="utf-8")
    profile = work / "profile"
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir()
    cmd = [exe, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probed.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"chromium exited {run.returncode}: {run.stderr[-2000:]}")
    console = [line.split("]", 1)[-1].strip() for line in run.stderr.splitlines() if ":CONSOLE" in line]
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', run.stdout, flags=re.DOTALL)
    if found is None:
        return PageCheck(errors=["the page never finished loading (no probe result)"], console=console)
    data = json.loads(html.unescape(found.group(1)))
    if screenshot is not None:
        shot = [exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--window-size=1300,2400",
                page.resolve().as_uri()]
        subprocess.run(shot, capture_output=True, text=True, timeout=180, check=False)
    return PageCheck(console=console, **data)
