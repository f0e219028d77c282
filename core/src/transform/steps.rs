//! The transforms themselves: each compiled once ([`Step::new`]), prepared once per table
//! version and topic ([`Step::prepare`]: column indexes resolved, the output schema built),
//! then applied per change.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use regex::Regex;
use sha2::Sha256;

use crate::change::{Change, SourcedChange};
use crate::event::{Column, DataType, Op, TableId, TableSchema};
use crate::topic::glob_match;
use crate::value::{Timestamp, Value};

use super::config::{ColumnsConfig, Deletes, MaskWith, TransformConfig};
use super::outbox::{self, Router};
use super::predicate::{self, Bound, Expr, Subject};
use super::values::text_form;

/// The flag column of `unwrap` with `deletes = "flag"`, as Debezium names it.
pub const DELETED: &str = "__deleted";

pub(super) enum Step {
    Filter {
        topics: Vec<String>,
        expr: Expr,
    },
    Route {
        topics: Vec<String>,
        regex: Regex,
        replacement: Vec<Part>,
    },
    Columns {
        topics: Vec<String>,
        config: ColumnsConfig,
    },
    Mask {
        topics: Vec<String>,
        columns: Vec<String>,
        with: MaskWith,
        /// Keyed with the salt once; cloned per value.
        mac: Hmac<Sha256>,
    },
    Set {
        topics: Vec<String>,
        fields: Vec<(String, Vec<Part>)>,
    },
    Unwrap {
        topics: Vec<String>,
        deletes: Deletes,
    },
    Outbox(Router),
}

/// A piece of a template: text, a regex group, or a change attribute.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    Text(String),
    Group(usize),
    Named(String),
    Var(Var),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Var {
    Op,
    Table,
    Topic,
    Position,
    Txn,
    CommitTs,
}

/// What a step worked out for one table version on one topic.
#[derive(Clone)]
pub(super) enum Prepared {
    /// The step does not apply to this topic.
    Skip,
    /// The condition; None: it names only `__op` and friends and truncates face it too.
    Filter(Arc<Bound>, bool),
    Route(Result<(Arc<str>, Arc<TableSchema>), String>),
    Columns(Arc<[usize]>, Arc<TableSchema>),
    Mask(Arc<[usize]>, Arc<TableSchema>),
    /// Per field: the column it replaces (None: appended) and its value.
    Set(Arc<[(Option<usize>, Filled)]>, Arc<TableSchema>),
    /// `deletes = "flag"`: the table with `__deleted` (None for the other modes).
    Unwrap(Option<Arc<TableSchema>>),
    Outbox(Arc<outbox::Plan>),
}

/// A `set` field's value for one table on one topic.
pub(super) enum Filled {
    /// The same for every change.
    Fixed(Value),
    /// Filled per change from field `n`'s template.
    PerChange(usize),
}

impl Prepared {
    pub(super) fn applies(&self) -> bool {
        !matches!(self, Prepared::Skip)
    }

    /// The table (and topic, when routed) the step hands on; None when that depends on the
    /// change (outbox events) or the change is rejected.
    pub(super) fn output<'a>(
        &'a self,
        table: &'a Arc<TableSchema>,
        topic: &'a Arc<str>,
    ) -> Option<(&'a Arc<TableSchema>, &'a Arc<str>)> {
        match self {
            Prepared::Skip | Prepared::Filter(..) | Prepared::Unwrap(None) => Some((table, topic)),
            Prepared::Route(Ok((to, routed))) => Some((routed, to)),
            Prepared::Route(Err(_)) | Prepared::Outbox(_) => None,
            Prepared::Columns(_, out)
            | Prepared::Mask(_, out)
            | Prepared::Set(_, out)
            | Prepared::Unwrap(Some(out)) => Some((out, topic)),
        }
    }
}

/// A rejected change: its record, and why.
type Reject = (usize, String);

impl Step {
    pub(super) fn new(config: &TransformConfig) -> Result<Step, String> {
        let topics = config.topics().to_vec();
        Ok(match config {
            TransformConfig::Filter(c) => Step::Filter {
                topics,
                expr: predicate::parse(&c.when).map_err(|e| format!("when: {e}"))?,
            },
            TransformConfig::Route(c) => {
                let regex =
                    Regex::new(&format!("^(?:{})$", c.regex)).map_err(|e| format!("regex: {e}"))?;
                let replacement = template(&c.replacement, Some(&regex))
                    .map_err(|e| format!("replacement: {e}"))?;
                Step::Route {
                    topics,
                    regex,
                    replacement,
                }
            }
            TransformConfig::Columns(c) => {
                if c.include.is_empty() && c.exclude.is_empty() && c.rename.is_empty() {
                    return Err("give include, exclude or rename".to_owned());
                }
                Step::Columns {
                    topics,
                    config: c.clone(),
                }
            }
            TransformConfig::Mask(c) => {
                if c.columns.is_empty() {
                    return Err("columns: name the columns to mask".to_owned());
                }
                Step::Mask {
                    topics,
                    columns: c.columns.clone(),
                    with: c.with,
                    mac: <Hmac<Sha256> as KeyInit>::new_from_slice(&salt(c)?)
                        .expect("HMAC takes a key of any length"),
                }
            }
            TransformConfig::Set(c) => {
                if c.fields.is_empty() {
                    return Err("fields: give at least one column = \"value\"".to_owned());
                }
                let fields = c
                    .fields
                    .iter()
                    .map(|(name, text)| {
                        template(text, None)
                            .map(|t| (name.clone(), t))
                            .map_err(|e| format!("fields.{name}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                Step::Set { topics, fields }
            }
            TransformConfig::Unwrap(c) => Step::Unwrap {
                topics,
                deletes: c.deletes,
            },
            TransformConfig::Outbox(c) => Step::Outbox(Router::new(c)?),
        })
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Step::Filter { .. } => "filter",
            Step::Route { .. } => "route",
            Step::Columns { .. } => "columns",
            Step::Mask { .. } => "mask",
            Step::Set { .. } => "set",
            Step::Unwrap { .. } => "unwrap",
            Step::Outbox(_) => "outbox",
        }
    }

    fn topics(&self) -> &[String] {
        match self {
            Step::Filter { topics, .. }
            | Step::Route { topics, .. }
            | Step::Columns { topics, .. }
            | Step::Mask { topics, .. }
            | Step::Set { topics, .. }
            | Step::Unwrap { topics, .. } => topics,
            Step::Outbox(router) => router.topics(),
        }
    }

    /// Works out what the step does to `table` on `topic`; an error names a column the table
    /// lacks or cannot give up.
    pub(super) fn prepare(
        &self,
        table: &Arc<TableSchema>,
        topic: &str,
    ) -> Result<Prepared, String> {
        let topics = self.topics();
        if !topics.is_empty() && !topics.iter().any(|p| glob_match(p, topic)) {
            return Ok(Prepared::Skip);
        }
        Ok(match self {
            Step::Filter { expr, .. } => {
                let bound = expr
                    .bind(table)
                    .map_err(|c| format!("when: no column `{c}`"))?;
                Prepared::Filter(Arc::new(bound), expr.columns().is_empty())
            }
            Step::Route {
                regex, replacement, ..
            } => match regex.captures(topic) {
                None => Prepared::Skip,
                Some(groups) => Prepared::Route(route(&groups, replacement, table)),
            },
            Step::Columns { config, .. } => columns(config, table)?,
            Step::Mask { columns, with, .. } => {
                let mut indexes = Vec::new();
                let mut out = TableSchema::clone(table);
                for name in columns {
                    let i = index(table, name)?;
                    if table.columns[i].key && *with != MaskWith::Hash {
                        return Err(format!("column `{name}` is part of the key: mask it with \"hash\" (equal values stay equal) or not at all"));
                    }
                    out.columns[i].data_type = if *with == MaskWith::Null {
                        out.columns[i].data_type.clone()
                    } else {
                        DataType::Text
                    };
                    out.columns[i].type_name = if *with == MaskWith::Null {
                        out.columns[i].type_name.clone()
                    } else {
                        "text".to_owned()
                    };
                    out.columns[i].nullable |= *with == MaskWith::Null;
                    indexes.push(i);
                }
                Prepared::Mask(indexes.into(), Arc::new(out))
            }
            Step::Set { fields, .. } => {
                let mut out = TableSchema::clone(table);
                let mut plan = Vec::new();
                for (field, (name, parts)) in fields.iter().enumerate() {
                    let data_type = if parts == &[Part::Var(Var::CommitTs)] {
                        DataType::TimestampTz
                    } else {
                        DataType::Text
                    };
                    let column = Column {
                        name: name.clone(),
                        type_name: if data_type == DataType::Text {
                            "text"
                        } else {
                            "timestamptz"
                        }
                        .to_owned(),
                        data_type,
                        key: false,
                        nullable: true,
                    };
                    // Templates of static text, the table and the topic are filled once.
                    let filled = match fixed(parts, &table.table.to_string(), topic) {
                        Some(value) => Filled::Fixed(value),
                        None => Filled::PerChange(field),
                    };
                    match table.columns.iter().position(|c| c.name == *name) {
                        Some(i) if table.columns[i].key => {
                            return Err(format!(
                            "fields.{name}: column `{name}` is part of the key and cannot be set"
                        ))
                        }
                        Some(i) => {
                            out.columns[i] = column;
                            plan.push((Some(i), filled));
                        }
                        None => {
                            out.columns.push(column);
                            plan.push((None, filled));
                        }
                    }
                }
                Prepared::Set(plan.into(), Arc::new(out))
            }
            Step::Unwrap { deletes, .. } => {
                Prepared::Unwrap((*deletes == Deletes::Flag).then(|| {
                    let mut out = TableSchema::clone(table);
                    if !out.columns.iter().any(|c| c.name == DELETED) {
                        out.columns.push(Column {
                            name: DELETED.to_owned(),
                            type_name: "text".to_owned(),
                            data_type: DataType::Text,
                            key: false,
                            nullable: false,
                        });
                    }
                    Arc::new(out)
                }))
            }
            Step::Outbox(router) => Prepared::Outbox(Arc::new(router.plan(table)?)),
        })
    }

    /// Applies the step to the change in place: `Ok(false)` drops it, `Err` rejects it.
    pub(super) fn apply(
        &self,
        prepared: &Prepared,
        sourced: &mut SourcedChange,
        topic: &Arc<str>,
    ) -> Result<bool, Reject> {
        let record = sourced.record;
        let change = &mut sourced.change;
        match (self, prepared) {
            (_, Prepared::Skip) => {}
            (Step::Filter { .. }, Prepared::Filter(bound, meta_only)) => {
                if change.op == Op::Truncate && !meta_only {
                    return Ok(true);
                }
                let table = if bound.uses_table() {
                    change.table.table.to_string()
                } else {
                    String::new()
                };
                let subject = Subject {
                    op: change.op,
                    before: change.before.as_deref(),
                    after: change.after.as_deref(),
                    table: &table,
                    topic,
                };
                if !bound.eval(&subject).map_err(|e| (record, e))? {
                    return Ok(false);
                }
            }
            (Step::Route { .. }, Prepared::Route(routed)) => {
                let (to, table) = routed.clone().map_err(|e| (record, e))?;
                sourced.topic = Some(to);
                sourced.change.table = table;
            }
            (Step::Columns { .. }, Prepared::Columns(keep, table)) => {
                for row in [&mut change.before, &mut change.after]
                    .into_iter()
                    .flatten()
                {
                    // In place: `keep` ascends, so each kept value moves down to its slot.
                    for (slot, &i) in keep.iter().enumerate() {
                        if slot != i && i < row.len() {
                            row.swap(slot, i);
                        }
                    }
                    row.truncate(keep.len());
                }
                change.table = Arc::clone(table);
            }
            (Step::Mask { with, mac, .. }, Prepared::Mask(indexes, table)) => {
                for row in [&mut change.before, &mut change.after]
                    .into_iter()
                    .flatten()
                {
                    for &i in indexes.iter() {
                        if let Some(value) = row.get_mut(i) {
                            *value = mask(value, *with, mac);
                        }
                    }
                }
                change.table = Arc::clone(table);
            }
            (Step::Set { fields, .. }, Prepared::Set(plan, table)) => {
                // Values filled from this change (none when every field is fixed for the
                // table: no allocation per change then).
                let values: Vec<Option<Value>> = if plan
                    .iter()
                    .any(|(_, filled)| matches!(filled, Filled::PerChange(_)))
                {
                    plan.iter()
                        .map(|(_, filled)| match filled {
                            Filled::Fixed(_) => None,
                            Filled::PerChange(field) => {
                                Some(fill(&fields[*field].1, change, topic))
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let appended = plan.iter().filter(|(replace, _)| replace.is_none()).count();
                for row in [&mut change.before, &mut change.after]
                    .into_iter()
                    .flatten()
                {
                    row.reserve_exact(appended);
                    for (i, (replace, filled)) in plan.iter().enumerate() {
                        let value = match (filled, values.get(i)) {
                            (Filled::Fixed(fixed), _) => fixed.clone(),
                            (_, Some(Some(value))) => value.clone(),
                            (_, _) => Value::Null,
                        };
                        match replace {
                            Some(i) => row[*i] = value,
                            None => row.push(value),
                        }
                    }
                }
                change.table = Arc::clone(table);
            }
            (Step::Unwrap { deletes, .. }, Prepared::Unwrap(flagged)) => {
                match deletes {
                    Deletes::Tombstone => {}
                    Deletes::Drop if change.op == Op::Delete => return Ok(false),
                    Deletes::Drop => {}
                    Deletes::Flag => {
                        if let Some(table) = flagged {
                            flag_deleted(change, table);
                        }
                    }
                }
                sourced.unwrapped = true;
            }
            (Step::Outbox(_), Prepared::Outbox(plan)) => {
                return outbox::route(plan, sourced).map_err(|e| (record, e));
            }
            _ => unreachable!("a step is prepared by itself"),
        }
        Ok(true)
    }
}

/// A delete becomes an update of the old row with `__deleted = "true"`; other changes get
/// `"false"`. The old row's nulls outside the key become "not sent" (the source may have
/// sent only the key): database sinks keep what they hold for those.
fn flag_deleted(change: &mut Change, table: &Arc<TableSchema>) {
    let adds = table.columns.len() > change.table.columns.len();
    let flag = |row: &mut Vec<Value>, deleted: bool| {
        let value = Value::Text(if deleted { "true" } else { "false" }.into());
        if adds {
            row.push(value);
        } else if let Some(i) = table.columns.iter().position(|c| c.name == DELETED) {
            row[i] = value;
        }
    };
    if change.op == Op::Delete {
        if let Some(mut row) = change.before.clone() {
            for (value, column) in row.iter_mut().zip(&change.table.columns) {
                if !column.key && matches!(value, Value::Null) {
                    *value = Value::Unavailable;
                }
            }
            flag(&mut row, true);
            change.after = Some(row);
        }
        change.op = Op::Update;
        if let Some(before) = &mut change.before {
            flag(before, false);
        }
    } else {
        for row in [&mut change.before, &mut change.after]
            .into_iter()
            .flatten()
        {
            flag(row, false);
        }
    }
    change.table = Arc::clone(table);
}

fn mask(value: &Value, with: MaskWith, keyed: &Hmac<Sha256>) -> Value {
    match (value, with) {
        (Value::Null | Value::Unavailable, _) | (_, MaskWith::Null) => match value {
            Value::Unavailable => Value::Unavailable,
            _ => Value::Null,
        },
        (_, MaskWith::Redact) => Value::Text("****".into()),
        (_, MaskWith::Hash) => {
            let mut mac = keyed.clone();
            match value {
                Value::Text(text) => mac.update(text.as_bytes()),
                other => mac.update(text_form(other).unwrap_or_default().as_bytes()),
            }
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut hex = [0u8; 64];
            for (i, byte) in mac.finalize().into_bytes().iter().enumerate() {
                hex[2 * i] = HEX[usize::from(byte >> 4)];
                hex[2 * i + 1] = HEX[usize::from(byte & 15)];
            }
            Value::Text(std::str::from_utf8(&hex).expect("hex is ASCII").into())
        }
    }
}

fn salt(config: &super::config::MaskConfig) -> Result<Vec<u8>, String> {
    if config.with != MaskWith::Hash {
        return Ok(Vec::new());
    }
    let text = match (&config.salt_file, &config.salt_env) {
        (Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| format!("salt_file {}: {e}", path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| format!("salt_env: the environment variable {var} is not set"))?,
        (Some(_), Some(_)) => return Err("give salt_file or salt_env, not both".to_owned()),
        (None, None) => {
            return Err("with = \"hash\" needs a salt: salt_file (a file holding it) or salt_env (a variable holding it); without one, a hash of a short value is guessed by trying every value".to_owned())
        }
    };
    let salt = text.strip_suffix('\n').unwrap_or(&text);
    let salt = salt.strip_suffix('\r').unwrap_or(salt);
    if salt.len() < 16 {
        return Err(format!(
            "the salt is {} bytes long: use at least 16 random bytes",
            salt.len()
        ));
    }
    Ok(salt.as_bytes().to_vec())
}

fn index(table: &TableSchema, name: &str) -> Result<usize, String> {
    table
        .columns
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| format!("no column `{name}`"))
}

fn columns(config: &ColumnsConfig, table: &Arc<TableSchema>) -> Result<Prepared, String> {
    for name in config
        .include
        .iter()
        .chain(&config.exclude)
        .chain(config.rename.keys())
    {
        index(table, name)?;
    }
    let mut keep = Vec::new();
    let mut out = Vec::new();
    for (i, column) in table.columns.iter().enumerate() {
        let excluded = config.exclude.contains(&column.name);
        if column.key && excluded {
            return Err(format!(
                "exclude: column `{}` is part of the key, which sinks need; mask it instead",
                column.name
            ));
        }
        let included =
            config.include.is_empty() || config.include.contains(&column.name) || column.key;
        if included && !excluded {
            keep.push(i);
            let mut column = column.clone();
            if let Some(new) = config.rename.get(&column.name) {
                column.name = new.clone();
            }
            out.push(column);
        }
    }
    for (i, column) in out.iter().enumerate() {
        if out[..i].iter().any(|c| c.name == column.name) {
            return Err(format!(
                "rename: two columns would be called `{}`",
                column.name
            ));
        }
    }
    let out = TableSchema {
        table: table.table.clone(),
        columns: out,
        version: table.version,
    };
    Ok(Prepared::Columns(keep.into(), Arc::new(out)))
}

/// The routed topic and the table renamed after it: `prefix.schema.table` or `schema.table`
/// give both names; a single name is the table's, in its own schema.
fn route(
    groups: &regex::Captures<'_>,
    replacement: &[Part],
    table: &TableSchema,
) -> Result<(Arc<str>, Arc<TableSchema>), String> {
    let mut to = String::new();
    for part in replacement {
        match part {
            Part::Text(text) => to.push_str(text),
            Part::Group(n) => to.push_str(
                groups
                    .get(*n)
                    .ok_or_else(|| {
                        format!(
                            "group {n} of the regex matched nothing in topic {}",
                            &groups[0]
                        )
                    })?
                    .as_str(),
            ),
            Part::Named(name) => to.push_str(
                groups
                    .name(name)
                    .ok_or_else(|| {
                        format!(
                            "group `{name}` of the regex matched nothing in topic {}",
                            &groups[0]
                        )
                    })?
                    .as_str(),
            ),
            Part::Var(_) => unreachable!("routes take regex groups only"),
        }
    }
    if to.is_empty() {
        return Err(format!(
            "the replacement made topic {} an empty name",
            &groups[0]
        ));
    }
    let names: Vec<&str> = to.rsplitn(3, '.').collect();
    let id = match names.as_slice() {
        [name] => TableId {
            namespace: table.table.namespace.clone(),
            name: (*name).to_owned(),
        },
        [name, namespace, ..] => TableId {
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
        },
        [] => unreachable!("rsplitn yields at least one part"),
    };
    let out = TableSchema {
        table: id,
        columns: table.columns.clone(),
        version: table.version,
    };
    Ok((to.into(), Arc::new(out)))
}

/// Parses `$1`, `${1}`, `${name}` (regex groups, when `regex` is given) or `${op}` and the
/// other change attributes (when not); `$$` is a `$`.
pub(super) fn template(text: &str, regex: Option<&Regex>) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("`${{` without `}}` in {text:?}"))?;
            (&inner[..end], &inner[end + 1..])
        } else if let Some(after) = rest.strip_prefix('$') {
            literal.push('$');
            rest = after;
            continue;
        } else {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!(
                    "`$` must be followed by a group number, {{name}} or $ in {text:?}"
                ));
            }
            (&rest[..end], &rest[end..])
        };
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal)));
        }
        parts.push(match regex {
            Some(regex) => match name.parse::<usize>() {
                Ok(n) if n < regex.captures_len() => Part::Group(n),
                Ok(n) => return Err(format!("the regex has no group {n} (it has {})", regex.captures_len() - 1)),
                Err(_) if regex.capture_names().flatten().any(|g| g == name) => Part::Named(name.to_owned()),
                Err(_) => return Err(format!("the regex has no group named `{name}`")),
            },
            None => Part::Var(match name {
                "op" => Var::Op,
                "table" => Var::Table,
                "topic" => Var::Topic,
                "position" => Var::Position,
                "txn" => Var::Txn,
                "commit_ts" => Var::CommitTs,
                other => return Err(format!("`${{{other}}}` is not one of ${{op}}, ${{table}}, ${{topic}}, ${{position}}, ${{txn}}, ${{commit_ts}}")),
            }),
        });
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

/// A template's value when it names nothing that changes per change.
fn fixed(parts: &[Part], table: &str, topic: &str) -> Option<Value> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Var(Var::Table) => out.push_str(table),
            Part::Var(Var::Topic) => out.push_str(topic),
            _ => return None,
        }
    }
    Some(Value::Text(out.into()))
}

/// A `set` field's value for `change`.
fn fill(parts: &[Part], change: &Change, topic: &str) -> Value {
    if parts == [Part::Var(Var::CommitTs)] {
        return Value::TimestampTz(Timestamp::Micros(change.commit_ts_us));
    }
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Var(Var::Op) => out.push_str(change.op.code()),
            Part::Var(Var::Table) => out.push_str(&change.table.table.to_string()),
            Part::Var(Var::Topic) => out.push_str(topic),
            Part::Var(Var::Position) => {
                if let Some(position) = &change.position {
                    out.push_str(&position.to_string());
                }
            }
            Part::Var(Var::Txn) => out.push_str(change.txn.as_deref().unwrap_or_default()),
            Part::Var(Var::CommitTs) => {
                crate::value::write_utc_timestamp(&mut out, change.commit_ts_us)
            }
            Part::Group(_) | Part::Named(_) => {
                unreachable!("set fields take change attributes only")
            }
        }
    }
    Value::Text(out.into())
}
