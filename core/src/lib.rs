//! sluice-core: the vocabulary of sluice and its runtime.
//!
//! - `value`, `event`, `position`, `checkpoint`: what flows and where it came from; `change`:
//!   the typed change a change sink receives, and the decoder that makes it from a record;
//! - `source`, `sink`, `encode`, `event_log`: the contracts connectors and backends implement;
//!   `batch`: the records every log backend speaks (Kafka's record model) and the record batch
//!   v2 codec the embedded log stores and writers prepare batches with;
//! - `pipeline`: the runtime that moves batches from sources into the log and from the log to
//!   sinks, with its shutdown order; `task`: spawning and stopping; `retry`: error policy;
//!   `health`: failure domains (a failed sink stops alone);
//! - `topic`: topic names and partitioning; `metrics`: metric names; `redact`: secrets out of
//!   messages.
//!
//! core depends on no database driver.

pub mod batch;
pub mod change;
pub mod checkpoint;
pub mod clock;
pub mod encode;
pub mod error;
pub mod event;
pub mod event_log;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod redact;
pub mod retry;
pub mod sink;
pub mod source;
pub mod task;
pub mod topic;
pub mod transform;
pub mod url;
pub mod value;
