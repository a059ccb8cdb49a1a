"""Prometheus metrics for the whole kernel, fed by the `cortex_observe` hook (every call, from
gRPC, MCP, HTTP or a plugin) and, at scrape time, by KernelService.ListContracts (provider
health and circuit state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cortex.contracts.kernel.v1 import kernel_pb2

CIRCUIT_VALUE = {
    kernel_pb2.Provider.CIRCUIT_CLOSED: 0,
    kernel_pb2.Provider.CIRCUIT_HALF_OPEN: 1,
    kernel_pb2.Provider.CIRCUIT_OPEN: 2,
}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "cortex_calls", "Contract calls that finished, by method, provider and gRPC status",
            ["service", "method", "provider", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "cortex_call_latency_seconds", "Call latency as the router saw it", ["service", "method"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.decisions = Counter(
            "cortex_decisions", "Authorization decisions on calls", ["effect"], registry=self.registry,
        )
        self.circuit = Gauge(
            "cortex_provider_circuit_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            ["service", "provider"], registry=self.registry,
        )
        self.healthy = Gauge(
            "cortex_provider_healthy", "1 when the provider's health probe says serving",
            ["service", "provider"], registry=self.registry,
        )
        self.http_requests = Counter(
            "cortex_http_requests", "HTTP API requests by route kind and status", ["route", "status"], registry=self.registry,
        )
        self.webhook_failures = Counter(
            "cortex_webhook_failures", "Webhook deliveries that failed after every retry", ["url"], registry=self.registry,
        )
        self._children: dict[tuple, tuple] = {}  # labelled series by call kind (bounded by contracts x providers x codes)

    def observe(self, call, outcome) -> None:
        key = (call.method.service, call.method.name, outcome.provider or "", outcome.code.name, outcome.decision.allow)
        children = self._children.get(key)
        if children is None:  # prometheus_client's labels() costs more than the rest: once per kind of call
            service, method, provider, code, allow = key
            children = self._children[key] = (
                self.calls.labels(service, method, provider, code),
                self.latency.labels(service, method),
                self.decisions.labels("allow" if allow else "deny"),
            )
        calls, latency, decisions = children
        calls.inc()
        latency.observe(outcome.latency_s)
        decisions.inc()

    def update_providers(self, contracts: kernel_pb2.ListContractsResponse) -> None:
        for contract in contracts.contracts:
            for provider in contract.providers:
                labels = (contract.service, provider.name)
                self.circuit.labels(*labels).set(CIRCUIT_VALUE.get(provider.circuit, 0))
                self.healthy.labels(*labels).set(1 if provider.health == kernel_pb2.Provider.HEALTH_SERVING else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
