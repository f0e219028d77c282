//! The outbox event router, as Debezium's EventRouter shapes events: a row inserted into
//! `outbox(id, aggregatetype, aggregateid, type, payload)` becomes one event on the topic
//! `outbox.event.<aggregatetype>`, keyed by `aggregateid`, whose value is the payload (sinks
//! that send events send the payload as it is: a JSON column's document, a text column's
//! string). Updates, deletes and snapshot reads of the outbox table are not events and are
//! dropped: the application only ever inserts, and may delete what was inserted at once.
//!
//! Database sinks receive the event as a row of a table named after the aggregate type, with
//! the id, aggregate id (the key), type, payload and `additional` columns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::change::{Change, SourcedChange};
use crate::event::{Op, TableId, TableSchema};
use crate::value::Value;

use super::config::OutboxConfig;
use super::values::text_form;

/// An event's topic and table.
type Routed = (Arc<str>, Arc<TableSchema>);

pub(super) struct Router {
    config: OutboxConfig,
    /// The route template, split at `${aggregatetype}`.
    route: Vec<Option<String>>,
}

/// The router's plan for one outbox table version.
pub(super) struct Plan {
    /// Indexes in the outbox row of: id, aggregate type, aggregate id, type, payload, then the
    /// additional columns.
    columns: Vec<usize>,
    input: Arc<TableSchema>,
    route: Vec<Option<String>>,
    /// Per aggregate type: its topic and the event table.
    tables: Mutex<HashMap<String, Routed>>,
}

impl Router {
    pub(super) fn new(config: &OutboxConfig) -> Result<Router, String> {
        // The route names the aggregate type as `${aggregatetype}` or by the column's own name.
        let mut route = Vec::new();
        let mut rest = config.route.as_str();
        let names = [
            "${aggregatetype}".to_owned(),
            format!("${{{}}}", config.aggregate_type),
        ];
        loop {
            let next = names
                .iter()
                .filter_map(|n| rest.find(n.as_str()).map(|at| (at, n.len())))
                .min();
            match next {
                Some((at, len)) => {
                    route.push(Some(rest[..at].to_owned()));
                    route.push(None);
                    rest = &rest[at + len..];
                }
                None => {
                    route.push(Some(rest.to_owned()));
                    break;
                }
            }
        }
        if !route.iter().any(Option::is_none) {
            return Err(format!("route {:?} does not name ${{aggregatetype}}: every aggregate type would share one topic", config.route));
        }
        if route.iter().flatten().any(|text| text.contains("${")) {
            return Err(format!(
                "route {:?}: ${{aggregatetype}} is the only name a route may use",
                config.route
            ));
        }
        Ok(Router {
            config: config.clone(),
            route,
        })
    }

    pub(super) fn topics(&self) -> &[String] {
        &self.config.topics
    }

    pub(super) fn plan(&self, table: &Arc<TableSchema>) -> Result<Plan, String> {
        let c = &self.config;
        let mut columns = Vec::new();
        for (role, name) in [
            ("id", &c.id),
            ("aggregate_type", &c.aggregate_type),
            ("aggregate_id", &c.aggregate_id),
            ("event_type", &c.event_type),
            ("payload", &c.payload),
        ]
        .into_iter()
        .chain(c.additional.iter().map(|name| ("additional", name)))
        {
            let i = table
                .columns
                .iter()
                .position(|col| col.name == *name)
                .ok_or_else(|| format!("{role}: the outbox table has no column `{name}` (set {role} to the column's name)"))?;
            columns.push(i);
        }
        Ok(Plan {
            columns,
            input: Arc::clone(table),
            route: self.route.clone(),
            tables: Mutex::new(HashMap::new()),
        })
    }
}

/// Turns an outbox insert into its event, in place; false for what is no event.
pub(super) fn route(plan: &Plan, sourced: &mut SourcedChange) -> Result<bool, String> {
    let change = &sourced.change;
    if change.op != Op::Create {
        return Ok(false);
    }
    let Some(row) = &change.after else {
        return Ok(false);
    };
    let kind = &plan.input.columns[plan.columns[1]].name;
    let aggregate_type = match row.get(plan.columns[1]).and_then(text_form) {
        Some(text) if !text.is_empty() => text,
        _ => {
            return Err(format!(
                "the outbox row's {kind} is empty: it names the events' topic"
            ))
        }
    };
    let (topic, table) = {
        let mut tables = plan
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tables
            .entry(aggregate_type.clone())
            .or_insert_with(|| {
                let topic: String = plan
                    .route
                    .iter()
                    .map(|p| p.as_deref().unwrap_or(&aggregate_type))
                    .collect();
                (topic.into(), Arc::new(event_table(plan, &aggregate_type)))
            })
            .clone()
    };
    let values: Vec<Value> = plan
        .columns
        .iter()
        .enumerate()
        .filter(|(role, _)| *role != 1)
        .map(|(_, &i)| row.get(i).cloned().unwrap_or(Value::Null))
        .collect();
    sourced.change = Change {
        table,
        op: Op::Create,
        before: None,
        after: Some(values),
        position: change.position.clone(),
        txn: change.txn.clone(),
        total_order: change.total_order,
        commit_ts_us: change.commit_ts_us,
    };
    sourced.topic = Some(topic);
    // id, aggregate id, type, payload: the payload is the fourth.
    sourced.payload = Some(3);
    Ok(true)
}

/// The event table of one aggregate type: id, aggregate id (the key), type, payload and the
/// additional columns, with the outbox table's types.
fn event_table(plan: &Plan, aggregate_type: &str) -> TableSchema {
    let columns = plan
        .columns
        .iter()
        .enumerate()
        .filter(|(role, _)| *role != 1)
        .map(|(role, &i)| {
            let mut column = plan.input.columns[i].clone();
            column.key = role == 2;
            column
        })
        .collect();
    TableSchema {
        table: TableId {
            namespace: plan.input.table.namespace.clone(),
            name: aggregate_type.to_owned(),
        },
        columns,
        version: plan.input.version,
    }
}
