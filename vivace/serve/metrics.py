"""``/metrics`` in Prometheus's text format: vivace's own counters, read from run traces.

Why from traces: the traces are vivace's one record of what happened, so the
server counts what the runs recorded (runs, calls, tokens, queue time, context
decisions, the route SoT took) rather than timing anything a second way. The
live figures (requests in flight, the engine's KV use and queue) are read from
the runtime at scrape time. A registry of its own keeps vLLM's process-wide
metrics (when an engine runs in-process) out of vivace's page.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vivace.trace import RunTrace, estimate_normal_s

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class _Live(Collector):
    """Gauges read from the runtime when Prometheus scrapes."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        limiter = self.runtime.limiter
        yield GaugeMetricFamily("vivace_requests_in_flight", "Model requests in flight (the process-wide cap's count)",
                                value=limiter.in_flight)
        yield GaugeMetricFamily("vivace_requests_cap", "The process-wide cap on model requests in flight",
                                value=limiter.max_in_flight)
        stats = getattr(self.runtime.backend, "stats", None)
        if stats is not None:
            yield GaugeMetricFamily("vivace_engine_kv_cache_usage", "The engine's KV-cache use, 0..1",
                                    value=stats.kv_cache_usage)
            yield GaugeMetricFamily("vivace_engine_running_requests", "Requests the engine is running",
                                    value=stats.running)
            yield GaugeMetricFamily("vivace_engine_waiting_requests", "Requests waiting in the engine's queue",
                                    value=stats.waiting)


class ServerMetrics:
    """The counters of one server; ``observe`` takes every finished run, failed and interrupted ones too."""

    def __init__(self, runtime: Any) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide: the *_created series only double the page
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("vivace_runs", "Runs by model and status (done, failed, interrupted)",
                            ["model", "status"], registry=r)
        self.run_seconds = Histogram("vivace_run_seconds", "End-to-end run latency", ["model"], buckets=_SECONDS,
                                     registry=r)
        self.ttft = Histogram("vivace_run_ttft_seconds", "Time to the run's first token", ["model"],
                              buckets=_SECONDS, registry=r)
        self.calls = Counter("vivace_calls", "Model calls by agent", ["agent"], registry=r)
        self.prompt_tokens = Counter("vivace_prompt_tokens", "Prompt tokens of all calls", registry=r)
        self.output_tokens = Counter("vivace_output_tokens", "Output tokens of all calls", registry=r)
        self.cached_tokens = Counter("vivace_cached_prompt_tokens", "Prompt tokens served from the prefix cache",
                                     registry=r)
        self.queue_seconds = Counter("vivace_queue_seconds", "Seconds calls waited (in-flight cap and engine queue)",
                                     registry=r)
        self.context = Counter("vivace_context_decisions", "Per-call context decisions",
                               ["decision"], registry=r)
        self.routes = Counter("vivace_routes", "The mode SoT-controller runs took (sot or normal)", ["mode"],
                              registry=r)
        self.sot_speedup = Histogram(
            "vivace_sot_estimated_speedup",
            "SoT runs: estimated normal-decoding latency over the measured latency (an estimate from the "
            "skeleton call's decode rate, not a measurement)",
            buckets=(0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 6), registry=r)
        r.register(_Live(runtime))

    def observe(self, model: str, trace: RunTrace) -> None:
        self.runs.labels(model, trace.status).inc()
        self.run_seconds.labels(model).observe(trace.latency_s)
        if trace.ttft_s is not None:
            self.ttft.labels(model).observe(trace.ttft_s)
        for call in trace.calls:
            self.calls.labels(call.agent or call.node).inc()
            self.prompt_tokens.inc(call.prompt_tokens)
            self.output_tokens.inc(call.output_tokens)
            self.cached_tokens.inc(call.cached_tokens or 0)
            self.queue_seconds.inc(call.queue_s)
            context = call.extra.get("context") or {}
            if context.get("retrieved"):
                self.context.labels("retrieved").inc()
            self.context.labels("compressed" if context.get("compressed") else "not_compressed").inc()
        if trace.mode in ("sot", "normal") and trace.agent == "sot":
            self.routes.labels(trace.mode).inc()
        if trace.mode == "sot" and trace.status == "done" and trace.latency_s > 0:
            normal_s, _ = estimate_normal_s(trace)
            if normal_s is not None:
                self.sot_speedup.observe(normal_s / trace.latency_s)

    def page(self) -> bytes:
        return generate_latest(self.registry)
