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
from urllib.parse import urlsplit

from pydantic import Field

from agent.collector import Collector, NotPresent
from agent.config import CollectorOptions, HttpUrl, PositiveDuration, Strict
from agent.model import Accumulator, Kind, Metric
from collectors.common.counters import MonotonicCounters

from .mapping import SERVERS, parse

log = logging.getLogger(__name__)

TAGS = ("host", "endpoint", "server", "model", "port", "gpus")
C, G = Kind.COUNTER, Kind.GAUGE
METRICS = (
    Metric("inference", "prompt_tokens_total", C, "tokens", "prompt (input) tokens processed", TAGS),
    Metric("inference", "generation_tokens_total", C, "tokens", "generated (output) tokens", TAGS),
    Metric("inference", "requests_total", C, "requests", "finished requests, by outcome", TAGS + ("outcome",)),
    Metric("inference", "running_requests", G, "requests", "requests being processed", TAGS),
    Metric("inference", "waiting_requests", G, "requests", "requests queued", TAGS),
    Metric("inference", "time_to_first_token_seconds_total", C, "seconds",
           "sum of time-to-first-token over requests (divide its rate by first_token_requests_total's)", TAGS),
    Metric("inference", "first_token_requests_total", C, "requests", "requests counted in the TTFT sum", TAGS),
    Metric("inference", "inter_token_latency_seconds_total", C, "seconds", "sum of inter-token latencies", TAGS),
    Metric("inference", "inter_token_latency_tokens_total", C, "tokens", "tokens counted in the ITL sum", TAGS),
    Metric("inference_endpoint", "up", G, "bool", "the endpoint answered with token counters", ("host", "endpoint")),
    Metric("inference_endpoint", "scrape_duration_seconds", G, "seconds", "wall time of the scrape",
           ("host", "endpoint")),
)

# Default ports, for discovery on loopback: vLLM/NIM/trtllm-serve 8000, SGLang 30000, TGI 3000 and 8080
# (the docker examples), llama.cpp 8080, Triton 8002.
DISCOVER = [("http://127.0.0.1:8000/metrics", "auto"), ("http://127.0.0.1:8000/v1/metrics", "nim"),
            ("http://127.0.0.1:8000/prometheus/metrics", "trtllm"), ("http://127.0.0.1:30000/metrics", "sglang"),
            ("http://127.0.0.1:3000/metrics", "tgi"), ("http://127.0.0.1:8080/metrics", "auto"),
            ("http://127.0.0.1:8002/metrics", "triton")]


class Endpoint(Strict):
    url: HttpUrl = Field(description="the server's metrics URL, e.g. http://127.0.0.1:8000/metrics")
    name: str | None = Field(None, description="tag endpoint (default: host:port)")
    server: Literal["auto", *SERVERS] = "auto"
    model: str | None = Field(None, description="model tag where the server does not label it (TGI, llama.cpp)")
    gpus: list[int] | None = Field(None, description="GPU indexes it runs on (default: found from its processes)")


class InferenceOptions(CollectorOptions):
    endpoints: list[Endpoint] = Field(default_factory=list)
    discover: bool = Field(True, description="also scrape the servers' default ports on 127.0.0.1")
    scrape_timeout: PositiveDuration = Field(2.0, description="deadline of one endpoint's whole scrape")


class _State:
    def __init__(self, ep: Endpoint, discovered: bool) -> None:
        self.ep = ep
        self.discovered = discovered
        parts = urlsplit(ep.url)
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.name = ep.name or f"{parts.hostname}:{self.port}"
        self.up: bool | None = None
        self.busy = False  # a scrape past its deadline has not returned yet: it is not started again
        self.server: str | None = None
        self.invalid: set[tuple[str, str]] = set()  # (model, counter) already warned about


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

    def __init__(self, options: InferenceOptions, ctx) -> None:
        super().__init__(options, ctx)
        configured = {e.url for e in options.endpoints}
        self.states = [_State(e, False) for e in options.endpoints]
        if options.discover:
            self.states += [_State(Endpoint(url=u, server=s), True) for u, s in DISCOVER if u not in configured]
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
        for st in self.states:
            if not st.busy:
                st.busy = True
                futures[id(st)] = self.pool.submit(self._fetch, st)
        found = 0
        for st in self.states:
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

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, st: _State, acc: Accumulator, text: str | None, took: float, error: str | None) -> int:
        kind, readings = None, []
        if error is None:
            try:
                kind, readings = parse(text, st.ep.server, st.ep.model or "default")
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
        gpus = self._gpus(st)
        for r in readings:
            tags = {"endpoint": st.name, "server": kind, "model": r.model, "port": str(st.port), "gpus": gpus}
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

    def _gpus(self, st: _State) -> str:
        if st.ep.gpus is not None:
            return ",".join(str(g) for g in sorted(st.ep.gpus))
        bus = self.ctx.bus
        host = urlsplit(st.ep.url).hostname or ""
        if bus is None or host not in ("127.0.0.1", "localhost", "::1"):
            return ""
        pids = server_pids(st.port)
        gpus = sorted({s.tags.get("gpu", "") for s in bus.latest("gpu_process") if s.tags.get("pid") in pids}
                      - {""}, key=lambda g: int(g) if g.isdigit() else 0)
        return ",".join(gpus)


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
