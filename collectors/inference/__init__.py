"""Inference collector: token counters scraped from the LLM servers on this node.

vLLM, SGLang, Hugging Face TGI, TensorRT-LLM (trtllm-serve and the Triton backend), NVIDIA NIM and
llama.cpp, from their Prometheus pages (parsed by prometheus_client). Each endpoint is configured,
or found by `discover` on the servers' default ports on loopback. A server that is not running is
"not present", not a failure. Token counters are kept monotonic across server restarts.

GPU attribution (for tokens per joule per GPU and per model): the endpoint's `gpus` from config, or
the GPUs on which the process listening on the endpoint's port, or one of its descendants, holds
memory (the gpu collector's per-process samples, read from the agent's sample bus).

Endpoints are scraped at the same time, each in its own thread and each within `scrape_timeout` for
the whole page (a server that drips bytes is cut off, not waited for); one slow endpoint never holds
back another. A page over MAX_PAGE is refused whole, never parsed in part. Redirects to another host
or port are refused: their values would be reported as this endpoint's.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Literal
from urllib.parse import urlencode, urlsplit

from pydantic import Field, model_validator

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, HttpUrl, PositiveDuration, Strict
from agent.model import Accumulator, Kind, Metric
from collectors.common.counters import MonotonicCounters

from .mapping import SERVERS, parse

log = logging.getLogger(__name__)

TAGS = ("host", "endpoint", "server", "model", "port", "gpus", "gpu_instances")
C, G = Kind.COUNTER, Kind.GAUGE
METRICS = (
    Metric("inference", "prompt_tokens_total", C, "tokens", "prompt (input) tokens processed", TAGS),
    Metric("inference", "generation_tokens_total", C, "tokens", "generated (output) tokens", TAGS),
    Metric("inference", "requests_total", C, "requests", "finished requests, by outcome", TAGS + ("outcome",)),
    Metric("inference", "running_requests", G, "requests", "requests being processed", TAGS),
    Metric("inference", "waiting_requests", G, "requests", "requests queued", TAGS),
    Metric("inference", "kv_cache_usage_ratio", G, "1",
           "fraction of the KV cache in use (0..1; vLLM, SGLang, NIM, llama.cpp, Triton's TensorRT-LLM backend)",
           TAGS),
    Metric("inference", "time_to_first_token_seconds_total", C, "seconds",
           "sum of time-to-first-token over requests (divide its rate by first_token_requests_total's)", TAGS),
    Metric("inference", "first_token_requests_total", C, "requests", "requests counted in the TTFT sum", TAGS),
    Metric("inference", "inter_token_latency_seconds_total", C, "seconds", "sum of inter-token latencies", TAGS),
    Metric("inference", "inter_token_latency_tokens_total", C, "tokens", "tokens counted in the ITL sum", TAGS),
    Metric("inference_endpoint", "up", G, "bool", "the endpoint answered with token counters", ("host", "endpoint")),
    Metric("inference_endpoint", "scrape_duration_seconds", G, "seconds", "wall time of the scrape",
           ("host", "endpoint")),
)

# Default ports, for discovery on loopback, every page probed with `auto` (Triton's vLLM backend publishes vllm:*
# on 8002; NIM 2.x pages carry vllm: series): vLLM, NIM and trtllm-serve 8000 (trtllm-serve's Prometheus page
# first: its /metrics is JSON iteration stats, and reading them takes them from others), SGLang 30000, TGI 3000,
# 80 and 8080, llama.cpp 8080, Triton 8002. Of the pages of one port, the first that answers is scraped alone.
DISCOVER = ["http://127.0.0.1:8000/prometheus/metrics", "http://127.0.0.1:8000/metrics",
            "http://127.0.0.1:8000/v1/metrics", "http://127.0.0.1:30000/metrics", "http://127.0.0.1:3000/metrics",
            "http://127.0.0.1:80/metrics", "http://127.0.0.1:8080/metrics", "http://127.0.0.1:8002/metrics"]


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def default_name(url: str) -> str:
    """host:port for a port's /metrics page, host:port/path?query for any other page: two pages of one port
    never share an endpoint tag."""
    parts = urlsplit(url)
    host, port = _host_port(url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{host}:{port}" + ("" if rest in ("/metrics", "") else rest)


class Endpoint(Strict):
    """One inference server's metrics page."""

    url: HttpUrl = Field(description="the server's metrics URL, e.g. http://127.0.0.1:8000/metrics")
    name: str | None = Field(None, description="tag endpoint (default: host:port)")
    server: Literal["auto", *SERVERS] = Field("auto", description="the server type, or auto (from its metric names)")
    model: str | None = Field(None, description="model tag where the server does not label it (TGI, llama.cpp)")
    gpus: list[int] | None = Field(None, description="GPU indexes it runs on (default: found from its processes)")
    models: list[str] | None = Field(
        None, description="llama.cpp router mode: the models it serves, each scraped as URL?model=NAME and tagged "
                          "with its name")

    @model_validator(mode="after")
    def _router(self):
        if self.models is not None and self.server not in ("auto", "llamacpp"):
            raise ValueError("models (router mode) is llama.cpp's; this endpoint's server is " + self.server)
        return self

    def pages(self) -> list[Endpoint]:
        """One endpoint per page: a llama.cpp router's models each on its own ?model= page."""
        if not self.models:
            return [self]
        sep = "&" if urlsplit(self.url).query else "?"
        return [self.model_copy(update={"url": f"{self.url}{sep}{urlencode({'model': m})}", "model": m,
                                        "models": None, "name": f"{self.name}/{m}" if self.name else None})
                for m in self.models]


class InferenceOptions(CollectorOptions):
    endpoints: list[Endpoint] = Field(default_factory=list)
    discover: bool = Field(True, description="also scrape the servers' default ports on 127.0.0.1")
    scrape_timeout: PositiveDuration = Field(2.0, description="deadline of one endpoint's whole scrape")

    @model_validator(mode="after")
    def _unique_names(self):
        seen: dict[str, str] = {}
        for e in (p for ep in self.endpoints for p in ep.pages()):
            name = e.name or default_name(e.url)
            if name in seen:
                raise ValueError(f"endpoints {seen[name]} and {e.url} would both be tagged endpoint={name!r}: "
                                 "give them different names")
            seen[name] = e.url
        return self


class _State:
    def __init__(self, ep: Endpoint, discovered: bool) -> None:
        self.ep = ep
        self.discovered = discovered
        self.origin = _host_port(ep.url)
        self.port = self.origin[1]
        self.name = ep.name or default_name(ep.url)
        self.up: bool | None = None
        self.busy = False  # a scrape past its deadline has not returned yet: it is not started again
        self.tried = False  # discovery: probed since the port's pages were last all tried
        self.server: str | None = None
        self.invalid: set[tuple[str, str]] = set()  # (model, counter) already warned about
        self.told: set[str] = set()  # notes on the page already said
        self.last: dict = {}  # each series' last finite value (an engine that prints NaN once keeps its count)


MAX_PAGE = 16 << 20  # a vLLM page with every histogram is ~100 KB; far beyond that is not a metrics page


def _origin(url: str) -> tuple:
    u = urlsplit(url)
    return (u.hostname or "").lower(), u.port or (443 if u.scheme == "https" else 80)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(req.full_url):
            raise urllib.error.HTTPError(newurl, code, f"redirect to another host refused ({newurl})", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


class PageTooLarge(ValueError):
    pass


def fetch(url: str, timeout: float) -> str:
    """The whole page within `timeout` seconds in all, or an error; never a part of it."""
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"Accept": "text/plain"})
    with _OPENER.open(req, timeout=timeout) as r:  # noqa: S310 - operator-configured URL
        if r.status != 200:
            raise OSError(f"HTTP {r.status}")
        length = r.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > MAX_PAGE:
            raise PageTooLarge(f"page of {int(length)} bytes refused (more than {MAX_PAGE})")
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"page not complete within {timeout:g} s (server too slow); dropped")
            chunk = r.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_PAGE:
                raise PageTooLarge(f"page larger than {MAX_PAGE} bytes refused, not parsed in part")
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class InferenceCollector(Collector):
    kind = "inference"
    Options = InferenceOptions
    METRICS = METRICS
    consumes = ("gpu_process",)  # gpu_process: which GPUs a server's processes use (its `gpus` tag)

    def __init__(self, options: InferenceOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.states = [_State(p, False) for e in options.endpoints for p in e.pages()]
        if options.discover:
            # a port with a configured endpoint is the operator's: discovery would count its tokens twice
            taken = {st.origin for st in self.states}
            self.states += [_State(Endpoint(url=u), True) for u in DISCOVER if _host_port(u) not in taken]
        self.counters = MonotonicCounters(ctx.state_dir / "inference-counters.json" if ctx.state_dir else None)
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(self.states))),
                                       thread_name_prefix=f"scrape-{ctx.instance}")

    def _fetch(self, st: _State) -> tuple[str, float]:
        t0 = time.perf_counter()
        try:
            return fetch(st.ep.url, self.options.scrape_timeout), time.perf_counter() - t0
        finally:
            st.busy = False

    def collect(self, acc: Accumulator) -> None:
        # A little beyond the scrape deadline: fetch() enforces it; this bounds a server that stalls its headers.
        deadline = time.monotonic() + self.options.scrape_timeout + 0.5
        futures = {}
        probe = self._discovered_pages()
        for st in self.states:
            if st.discovered and st not in probe:
                continue
            if not st.busy:
                st.busy = True
                futures[id(st)] = self.pool.submit(self._fetch, st)
        found = 0
        for st in self.states:
            if st.discovered and st not in probe:
                continue
            fut = futures.get(id(st))
            try:
                if fut is None:
                    raise TimeoutError("the previous scrape has not returned yet")
                text, took = fut.result(timeout=max(0.0, deadline - time.monotonic()))
                result = (text, took, None)
            except FutureTimeout:
                result = (None, self.options.scrape_timeout, f"no complete answer within "
                                                             f"{self.options.scrape_timeout:g} s")
            except (OSError, ValueError, urllib.error.URLError) as e:
                result = (None, 0.0, str(getattr(e, "reason", None) or e))
            found += self._one(st, acc, *result)
        if not found:
            raise NotPresent("no inference server answered")

    def _discovered_pages(self) -> list[_State]:
        """Per discovered port, the one page scraped in this run: the page that answers; while none does, the
        next untried page in DISCOVER's order (one probe per port and run; after the last, from the first)."""
        ports: dict[tuple, list[_State]] = {}
        for st in self.states:
            if st.discovered:
                ports.setdefault(st.origin, []).append(st)
        out = []
        for pages in ports.values():
            up = [st for st in pages if st.up]
            if up:
                out.append(up[0])
                continue
            untried = [st for st in pages if not st.tried]
            if not untried:
                for st in pages:
                    st.tried = False
                untried = pages
            untried[0].tried = True
            out.append(untried[0])
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, st: _State, acc: Accumulator, text: str | None, took: float, error: str | None) -> int:
        kind, readings = None, []
        if error is None:
            try:
                notes: list[str] = []
                kind, readings = parse(text, st.ep.server, st.ep.model or "default", notes, st.last)
                for note in notes:
                    if note not in st.told:
                        st.told.add(note)
                        log.warning("inference endpoint %s: %s", st.name, note)
            except ValueError as e:
                error = str(e)
        ok = error is None
        if ok != st.up:
            if ok:
                log.info("inference endpoint %s: %s server, models %s", st.name, kind,
                         ", ".join(r.model for r in readings))
            elif not st.discovered or st.up:
                log.warning("inference endpoint %s (%s): %s", st.name, st.ep.url, error)
        st.up, st.server = ok, kind
        if st.discovered and not ok:
            return 0  # nothing on that default port: not present, no series
        acc.add("inference_endpoint", {"up": ok, "scrape_duration_seconds": round(took, 6)}, {"endpoint": st.name})
        gpus, instances = self._gpus(st)
        for r in readings:
            tags = {"endpoint": st.name, "server": kind, "model": r.model, "port": str(st.port), "gpus": gpus,
                    "gpu_instances": instances}
            fields = {}
            for name, value in (("prompt_tokens_total", r.prompt_tokens),
                                ("generation_tokens_total", r.generation_tokens),
                                ("time_to_first_token_seconds_total", r.ttft_sum),
                                ("first_token_requests_total", r.ttft_count),
                                ("inter_token_latency_seconds_total", r.itl_sum),
                                ("inter_token_latency_tokens_total", r.itl_count)):
                if value is not None:
                    fields[name] = self._monotonic(st, r.model, name, value)
            fields["running_requests"] = r.running
            fields["waiting_requests"] = r.waiting
            if r.kv_cache_usage is not None:
                fields["kv_cache_usage_ratio"] = r.kv_cache_usage
            acc.add("inference", fields, tags)
            for outcome, n in r.requests.items():
                acc.add("inference", {"requests_total": self._monotonic(st, r.model, f"requests:{outcome}", n)},
                        {**tags, "outcome": outcome})
        return 1

    def _monotonic(self, st: _State, model: str, name: str, value: float) -> float | None:
        v, event = self.counters.update(f"{st.ep.url}|{model}|{name}", float(value))
        if event == "invalid":
            if (model, name) not in st.invalid:
                st.invalid.add((model, name))
                log.warning("inference endpoint %s: %s of %s is %s, not a count: reading skipped", st.name, name,
                            model, value)
        elif event:
            log.info("inference endpoint %s: %s counter went back (server restart); kept monotonic", st.name, name)
        return v

    def _gpus(self, st: _State) -> tuple[str, str]:
        """(the GPU indexes its processes use, and the MIG instances among them as GPU:INSTANCE), comma-joined."""
        if st.ep.gpus is not None:
            return ",".join(str(g) for g in sorted(st.ep.gpus)), ""
        bus = self.ctx.bus
        host = urlsplit(st.ep.url).hostname or ""
        if bus is None or host not in ("127.0.0.1", "localhost", "::1"):
            return "", ""
        pids = server_pids(st.port)
        procs = [s for s in bus.latest("gpu_process") if s.tags.get("pid") in pids and s.tags.get("gpu")]
        gpus = sorted({s.tags["gpu"] for s in procs}, key=lambda g: int(g) if g.isdigit() else 0)
        instances = sorted({f"{s.tags['gpu']}:{s.tags['gpu_instance']}" for s in procs if s.tags.get("gpu_instance")})
        return ",".join(gpus), ",".join(instances)


def server_pids(port: int) -> set[str]:
    """The process listening on the port and its descendants (workers hold the GPUs)."""
    try:
        import psutil

        owners = {c.pid for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN
                  and c.laddr and c.laddr.port == port and c.pid}
        out = set()
        for pid in owners:
            try:
                proc = psutil.Process(pid)
                out |= {str(pid)} | {str(p.pid) for p in proc.children(recursive=True)}
            except psutil.Error:
                continue
        return out
    except Exception:  # no permission to see other users' sockets: attribution stays empty
        return set()
