//! sluice-schema-registry: event encodings, and (to come) the Confluent-compatible registry.
//!
//! - `json`: the Debezium JSON envelope, what sluice writes to the log by default, so that
//!   Debezium consumers read sluice's topics unchanged.

pub mod json;
