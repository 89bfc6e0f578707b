"""vLLM's prefix-cache counters, read from its Prometheus ``/metrics``: how much of the viewers' history was reused.

vLLM counts, per request, the prompt tokens it looked up in its prefix cache (``vllm:prefix_cache_queries``) and
those it found (``vllm:prefix_cache_hits``); Prometheus clients expose a counter with a ``_total`` suffix. The hit
rate over an interval is the difference of two readings, so callers take one before and one after.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

_COUNTERS = {"vllm:prefix_cache_hits": "hits", "vllm:prefix_cache_queries": "queries"}


@dataclass(frozen=True)
class PrefixCache:
    """Prompt tokens looked up in the prefix cache (``queries``) and found there (``hits``), since vLLM started."""

    hits: float = 0.0
    queries: float = 0.0

    def __sub__(self, earlier: PrefixCache) -> PrefixCache:
        return PrefixCache(self.hits - earlier.hits, self.queries - earlier.queries)

    @property
    def hit_rate(self) -> float | None:
        """hits / queries, or None when nothing was looked up."""
        return self.hits / self.queries if self.queries > 0 else None


def parse_prefix_cache(text: str) -> PrefixCache | None:
    """The counters in a Prometheus text exposition (summed over label sets, e.g. several engines), or None
    when it has neither (not a vLLM server, or one with prefix caching off)."""
    sums = {"hits": 0.0, "queries": 0.0}
    seen = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0].strip().removesuffix("_total")
        if name in _COUNTERS:
            try:
                sums[_COUNTERS[name]] += float(value)
            except ValueError:
                continue
            seen = True
    return PrefixCache(**sums) if seen else None


def metrics_url(base_url: str) -> str:
    """``/metrics`` at the server's root, from the OpenAI base URL (``http://host:port/v1``) clients use."""
    p = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit((p.scheme, p.netloc, "/metrics", "", ""))


def read_prefix_cache(base_url: str, key: str = "", timeout: float = 10.0) -> PrefixCache | None:
    """The server's prefix-cache counters now, or None when it exposes none or does not answer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(metrics_url(base_url), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (the server the user named)
            return parse_prefix_cache(r.read(8 * 1024 * 1024).decode("utf-8", "replace"))
    except (OSError, ValueError, urllib.error.URLError):
        return None
