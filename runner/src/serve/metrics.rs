//! The server's Prometheus metrics (`GET /metrics`; the table in `docs/serve.md`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CallLabels {
    pub(super) function: String,
    pub(super) backend: String,
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FnLabels {
    pub(super) function: String,
    pub(super) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StartLabels {
    pub(super) function: String,
    pub(super) backend: String,
    pub(super) start: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LimitLabels {
    pub(super) function: String,
    pub(super) backend: String,
    pub(super) limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeathLabels {
    pub(super) function: String,
    pub(super) backend: String,
    /// `idle` (noticed before a call was handed to it, and replaced) or `in_call` (that call failed).
    pub(super) when: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RejectLabels {
    pub(super) function: String,
    pub(super) reason: String,
}

pub(super) fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

pub(super) struct Metrics {
    pub(super) registry: Registry,
    pub(super) invocations: Family<CallLabels, Counter>,
    pub(super) latency: Family<FnLabels, Histogram, fn() -> Histogram>,
    pub(super) starts: Family<StartLabels, Counter>,
    pub(super) in_flight: Family<FnLabels, Gauge>,
    pub(super) queue_depth: Family<FnLabels, Gauge>,
    pub(super) limit_hits: Family<LimitLabels, Counter>,
    pub(super) rejected: Family<RejectLabels, Counter>,
    pub(super) errors: Family<FnLabels, Counter>,
    pub(super) worker_deaths: Family<DeathLabels, Counter>,
    pub(super) http_connections: Family<FnLabels, Counter>,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hybox");
        let invocations = Family::<CallLabels, Counter>::default();
        let latency: Family<FnLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let starts = Family::<StartLabels, Counter>::default();
        let in_flight = Family::<FnLabels, Gauge>::default();
        let queue_depth = Family::<FnLabels, Gauge>::default();
        let limit_hits = Family::<LimitLabels, Counter>::default();
        let rejected = Family::<RejectLabels, Counter>::default();
        let errors = Family::<FnLabels, Counter>::default();
        let worker_deaths = Family::<DeathLabels, Counter>::default();
        let http_connections = Family::<FnLabels, Counter>::default();
        registry.register(
            "invocations",
            "Calls that ran, by function, backend and outcome kind",
            invocations.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Wall time of a call as the server saw it (queue wait excluded)",
            latency.clone(),
        );
        registry.register(
            "starts",
            "Calls by start kind: warm (worker or pre-built sandbox ready) or cold",
            starts.clone(),
        );
        registry.register("in_flight", "Calls running now", in_flight.clone());
        registry.register(
            "queue_depth",
            "Calls waiting for a concurrency slot",
            queue_depth.clone(),
        );
        registry.register(
            "limit_hits",
            "Calls ended by a policy limit (timeout, memory, pids, cpu_time, seccomp)",
            limit_hits.clone(),
        );
        registry.register(
            "rejected",
            "Calls refused (queue_full: 429, draining: 503)",
            rejected.clone(),
        );
        registry.register("errors", "Calls hybox could not run (500)", errors.clone());
        registry.register(
            "worker_deaths",
            "Warm workers that died (killed, crashed): while idle (replaced before a call) or in a call (that call got a 500)",
            worker_deaths.clone(),
        );
        registry.register(
            "http_connections",
            "Connections the server opened to an HTTP function's worker (each kept alive for many requests)",
            http_connections.clone(),
        );
        Metrics {
            registry,
            invocations,
            latency,
            starts,
            in_flight,
            queue_depth,
            limit_hits,
            rejected,
            errors,
            worker_deaths,
            http_connections,
        }
    }
}
