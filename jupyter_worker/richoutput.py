"""A job's display output, made safe to show in the user's own notebook.

The display stream (contracts: newline-delimited JSON mime bundles) is written by sandboxed code,
and the notebook it is shown in runs HTML and JavaScript with the user's Jupyter token. So only
these reach it, each checked here, in the kernel, whatever the job wrote:

- text/plain, cut at MAX_TEXT characters, its control characters made inert (formatting.inert:
  spelled out, newlines and tabs kept) like every other text of a job's;
- text/html, sanitized by nh3 (ammonia): no script, style, iframe, object, form, input, img or
  other embedding element, no event handler, style or class attribute, no URL-bearing attribute but
  an `a`'s href (no cite on q, blockquote, del, ins), links absolute http(s) only
  (a relative one would reach the Jupyter server), opened with rel=noopener; wrapped in the block MathJax skips;
- image/png and image/jpeg, base64 that decodes to at most MAX_IMAGE_BYTES starting with the
  format's magic bytes;
- text/markdown and text/latex become text/plain (their source, not rendered) when the bundle has
  no text/plain; every other type (JavaScript, SVG, widget views, PDF...) is dropped.

Metadata is dropped. A job's display output is bounded in count and bytes (MAX_ITEMS,
MAX_TOTAL_BYTES: cell.py's MAX_DISPLAYS and MAX_DISPLAY_BYTES, the one definition; a record is
read no further than MAX_RECORD_BYTES, the rest of it dropped as it comes, never kept), past which
one notice says so. The stream is read in linear time, however the job splits it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import nh3

from .cell import MAX_DISPLAY_BYTES, MAX_DISPLAYS
from .formatting import html_block, inert

MAX_ITEMS = MAX_DISPLAYS
MAX_TOTAL_BYTES = MAX_DISPLAY_BYTES
MAX_RECORD_BYTES = 16 << 20
MAX_IMAGE_BYTES = 10 << 20
MAX_TEXT = 1 << 20
MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
# nh3's default tags without the ones that embed or fetch (img: images come as image/png only).
HTML_TAGS = set(nh3.ALLOWED_TAGS) - {"img", "map", "area"}
# ... and without attributes that carry a URL (cite on q, blockquote, del, ins): only a's href, checked.
URL_ATTRIBUTES = {"cite", "src", "href", "action", "formaction", "background", "poster", "longdesc", "usemap"}
HTML_ATTRIBUTES = {
    tag: ({a for a in attrs if a not in URL_ATTRIBUTES} | ({"href"} & attrs if tag == "a" else set()))
    for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()
    if tag in HTML_TAGS
}
DROPPED_WITH_CONTENT = {"script", "style", "template", "iframe", "object", "embed", "noscript", "svg", "math"}

Bundle = dict[str, str]


def sanitize_html(markup: str) -> str:
    """HTML with nothing in it that runs, fetches or restyles the page."""
    clean = nh3.clean(
        markup,
        tags=HTML_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=HTML_ATTRIBUTES,
        url_schemes={"http", "https"},
        url_relative="deny",  # a relative link would reach the Jupyter server itself
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return html_block(clean)


def _image(mime: str, value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_IMAGE_BYTES * 4 // 3 + 8:
        return None
    try:
        raw = base64.b64decode(value.replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) > MAX_IMAGE_BYTES or not raw.startswith(MAGIC[mime]):
        return None
    return base64.b64encode(raw).decode()


def sanitize_bundle(data: Any) -> Bundle | None:
    """The parts of a job's mime bundle that are safe to show, or None when nothing is."""
    if not isinstance(data, dict):
        return None
    safe: Bundle = {}
    text = data.get("text/plain")
    if not isinstance(text, str):
        text = next((data[m] for m in ("text/markdown", "text/latex") if isinstance(data.get(m), str)), None)
    if isinstance(text, str):
        text = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n[... cut]"
        safe["text/plain"] = inert(text, keep="\n\t")
    if isinstance(data.get("text/html"), str) and len(data["text/html"]) <= MAX_RECORD_BYTES:
        safe["text/html"] = sanitize_html(data["text/html"])
    for mime in MAGIC:
        image = _image(mime, data.get(mime))
        if image is not None:
            safe[mime] = image
    return safe or None


class DisplaySink:
    """Reads the display stream as it comes (a record may be split between chunks) and hands each
    safe bundle to publish, within the bounds."""

    def __init__(self, publish: Callable[[Bundle], None], notice: Callable[[str], None] | None = None):
        self.publish = publish
        self.notice = notice or (lambda text: publish({"text/plain": text}))
        self.buffer = bytearray()  # the record being read, up to MAX_RECORD_BYTES
        self.skipping = False  # inside a record past MAX_RECORD_BYTES: dropped up to its newline
        self.items = 0
        self.bytes = 0
        self.full = False

    def feed(self, data: bytes) -> None:
        """Take the next piece of the stream: only the new bytes are searched for a newline."""
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            if self.skipping:  # the rest of an over-long record: counted, never kept
                self.bytes += (len(data) if end < 0 else end) - start
                if end < 0:
                    return
                self.skipping = False
                start = end + 1
                continue
            if end < 0:
                self.buffer += data[start:]
                if len(self.buffer) > MAX_RECORD_BYTES:
                    self.bytes += len(self.buffer)
                    self.buffer.clear()
                    self.skipping = True
                    self._stop(f"a display record past {MAX_RECORD_BYTES} bytes was dropped", final=False)
                return
            if self.buffer:
                self.buffer += data[start:end]
                line = bytes(self.buffer)
                self.buffer.clear()
            else:
                line = data[start:end]
            start = end + 1
            if len(line) > MAX_RECORD_BYTES:
                self.bytes += len(line)
                self._stop(f"a display record past {MAX_RECORD_BYTES} bytes was dropped", final=False)
                continue
            self._record(line)

    def _record(self, line: bytes) -> None:
        if self.full or not line.strip():
            return
        self.bytes += len(line)
        if self.items >= MAX_ITEMS or self.bytes > MAX_TOTAL_BYTES:
            self._stop(f"display output past {MAX_ITEMS} items or {MAX_TOTAL_BYTES >> 20} MiB is not shown")
            return
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return
        bundle = sanitize_bundle(record.get("data")) if isinstance(record, dict) else None
        if bundle is not None:
            self.items += 1
            self.publish(bundle)

    def _stop(self, why: str, final: bool = True) -> None:
        if not self.full:
            self.notice(f"[jupyter-worker: {why}]")
        self.full = self.full or final
