//! Exporters: Prometheus metrics and the HTTP endpoint, and the profile's output formats (one
//! module each). They read aggregated state only.

pub mod flamegraph;
pub mod folded;
pub mod http;
pub mod metrics;
pub mod speedscope;
