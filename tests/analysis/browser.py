"""Open an HTML page in headless Chromium and read what the browser saw (test code, not product code).

:func:`check_page` copies the page, adds a script that runs after load and records: how many images there
are and which did not decode, which of the expected section ids are shown, and whether any raw Markdown
(``**bold**``, a pipe-table rule, ``# heading``) or ``<pre>`` block is visible; Chromium's ``--dump-dom``
returns the page with that record.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--virtual-time-budget=15000"]

CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0 && im.naturalHeight > 0); });
  var want = %s;
  var shown = want.filter(function (id) {
    var el = document.getElementById(id);
    return el !== null && el.offsetHeight > 0 && window.getComputedStyle(el).display !== 'none'
      && window.getComputedStyle(el).visibility !== 'hidden';
  });
  var text = document.body.innerText;
  var md = [/\\*\\*[^*]+\\*\\*/, /\\|\\s*:?-{3,}:?\\s*\\|/, /^#{1,6} /m, /`[^`]+`/];
  var m = document.createElement('div');
  m.id = 'test-check';
  m.setAttribute('data-images', String(imgs.length));
  m.setAttribute('data-broken', broken.map(function (im) { return im.alt; }).join(' | '));
  m.setAttribute('data-sections', shown.join(' '));
  m.setAttribute('data-markdown', md.filter(function (re) { return re.test(text); }).map(String).join(' '));
  m.setAttribute('data-pre', String(document.getElementsByTagName('pre').length));
  document.body.appendChild(m);
});
</script>
"""


def find_chromium() -> Optional[str]:
    """Path of a Chromium / Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def check_page(page: Path, sections: Sequence[str], *, chromium: str, timeout: float = 120) -> dict[str, Any]:
    """What Chromium saw on ``page``: ``images`` (count), ``broken`` (alt texts of images that did not
    decode), ``sections`` (the ids of ``sections`` shown, in that order), ``markdown`` (raw-Markdown patterns
    found in the visible text), ``pre`` (number of ``<pre>`` blocks)."""
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as tmp:
        probe = Path(tmp) / "page.html"
        text = Path(page).read_text()
        probe.write_text(text.replace("</body>", CHECK_SCRIPT % json.dumps(list(sections)) + "</body>"))
        proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", "--dump-dom",
                               probe.as_uri()], capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<div id="test-check"([^>]*)>', proc.stdout)
    if m is None:
        raise RuntimeError(f"chromium returned no checked page (exit {proc.returncode}): {proc.stderr[-2000:]}")
    attrs = {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', m.group(1))}
    return {"images": int(attrs["data-images"]), "broken": [b for b in attrs["data-broken"].split(" | ") if b],
            "sections": attrs["data-sections"].split(), "markdown": attrs["data-markdown"],
            "pre": int(attrs["data-pre"])}
