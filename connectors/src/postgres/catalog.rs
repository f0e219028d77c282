//! What the source reads from Postgres' catalog over an ordinary connection: which tables match
//! the configured patterns, their columns and keys, and how to decode types that are not
//! built in (enums, domains, arrays of those).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use sluice_core::event::{Column, TableId};
use sluice_core::topic::glob_match;
use tokio_postgres::Client;

use super::config::UnknownTypes;
use super::text_format::PgType;
use super::PostgresError;

/// A table the source captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CapturedTable {
    pub oid: u32,
    pub id: TableId,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub has_primary_key: bool,
}

/// A column as the catalog describes it.
#[derive(Debug, Clone)]
pub(super) struct ColumnInfo {
    pub name: String,
    pub type_oid: u32,
    /// `format_type`: `numeric(10,2)`, `character varying(20)`, `integer[]`.
    pub type_name: String,
    pub not_null: bool,
    pub primary_key: bool,
}

pub(super) fn table_matches(patterns: &[String], table: &TableId) -> bool {
    let name = format!("{}.{}", table.namespace, table.name);
    patterns.iter().any(|pattern| glob_match(pattern, &name))
}

/// The tables a source's patterns pick, and those it leaves out.
#[derive(Debug, Clone, Default)]
pub(super) struct Resolution {
    /// In name order.
    pub captured: Vec<CapturedTable>,
    /// Tables only a wildcard matched that cannot identify their rows (no primary key, no
    /// REPLICA IDENTITY FULL or USING INDEX): publishing them would make the application's own
    /// UPDATEs and DELETEs on them fail, so they are left out.
    pub left_out: Vec<TableId>,
    /// Tables named exactly (no wildcard) that cannot identify their rows: an error.
    pub named_without_identity: Vec<CapturedTable>,
}

/// Whether a table's updates and deletes can be published: a primary key, or a replica
/// identity that names the old row (FULL or USING INDEX).
pub(super) fn identifies_rows(table: &CapturedTable) -> bool {
    match table.replica_identity {
        b'f' | b'i' => true,
        b'd' => table.has_primary_key,
        _ => false,
    }
}

/// Ordinary tables matching `patterns` and no `exclude` pattern, sorted into those captured
/// and those left out (see [`Resolution`]). A partitioned table is one table, its root (the
/// publication then publishes its partitions' changes as the root's, Postgres 13+); before
/// Postgres 13 its partitions are tables of their own.
pub(super) async fn resolve_tables(
    client: &Client,
    patterns: &[String],
    exclude: &[String],
) -> Result<Resolution, PostgresError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE (CASE WHEN current_setting('server_version_num')::int >= 130000 \
                         THEN c.relkind IN ('r', 'p') AND NOT c.relispartition \
                         ELSE c.relkind = 'r' END) \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' \
             ORDER BY n.nspname, c.relname",
            &[],
        )
        .await?;
    let mut resolution = Resolution::default();
    for row in rows {
        let id = TableId {
            namespace: row.get(1),
            name: row.get(2),
        };
        if !table_matches(patterns, &id) || table_matches(exclude, &id) {
            continue;
        }
        let identity: String = row.get(3);
        let table = CapturedTable {
            oid: row.get(0),
            id,
            replica_identity: identity.bytes().next().unwrap_or(b'd'),
            has_primary_key: row.get(4),
        };
        let named = patterns
            .iter()
            .any(|p| !p.contains('*') && *p == format!("{}.{}", table.id.namespace, table.id.name));
        if identifies_rows(&table) {
            resolution.captured.push(table);
        } else if named {
            resolution.named_without_identity.push(table);
        } else {
            resolution.left_out.push(table.id);
        }
    }
    Ok(resolution)
}

/// Columns of a table in attribute order (dropped and generated columns left out, as pgoutput
/// leaves them out).
pub(super) async fn table_columns(
    client: &Client,
    oid: u32,
) -> Result<Vec<ColumnInfo>, PostgresError> {
    let rows = client
        .query(
            "SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    COALESCE(a.attnum = ANY(i.indkey), false) \
             FROM pg_attribute a \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| ColumnInfo {
            name: row.get(0),
            type_oid: row.get(1),
            type_name: row.get(2),
            not_null: row.get(3),
            primary_key: row.get(4),
        })
        .collect())
}

/// The columns a Relation message names, typed as the message types them. The stream runs
/// behind the catalog: by the time a message is read, a later `ALTER TABLE` may have changed a
/// column's type, so only nullability and the primary key (which the message does not carry)
/// come from the catalog as it is now.
pub(super) async fn relation_columns(
    client: &Client,
    oid: u32,
    columns: &[super::decode::RelationColumn],
) -> Result<Vec<ColumnInfo>, PostgresError> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let types: Vec<u32> = columns.iter().map(|c| c.type_oid).collect();
    let modifiers: Vec<i32> = columns.iter().map(|c| c.type_modifier).collect();
    let rows = client
        .query(
            "SELECT format_type(m.typ, m.typmod), COALESCE(a.attnotnull, false), \
                    COALESCE(a.attnum = ANY(i.indkey), false) \
             FROM unnest($2::text[], $3::oid[], $4::int4[]) WITH ORDINALITY AS m(name, typ, typmod, n) \
             LEFT JOIN pg_attribute a ON a.attrelid = $1 AND a.attname = m.name AND NOT a.attisdropped \
             LEFT JOIN pg_index i ON i.indrelid = $1 AND i.indisprimary \
             ORDER BY m.n",
            &[&oid, &names, &types, &modifiers],
        )
        .await?;
    Ok(columns
        .iter()
        .zip(rows)
        .map(|(column, row)| ColumnInfo {
            name: column.name.clone(),
            type_oid: column.type_oid,
            type_name: row.get(0),
            not_null: row.get(1),
            primary_key: row.get(2),
        })
        .collect())
}

/// A table's columns as the catalog has them, as schema columns, and how to read each.
pub(super) async fn describe(
    client: &Client,
    resolver: &mut TypeResolver,
    table: &CapturedTable,
) -> Result<(Vec<ColumnInfo>, Vec<Column>, Vec<PgType>), PostgresError> {
    let columns = table_columns(client, table.oid).await?;
    let mut schema_columns = Vec::with_capacity(columns.len());
    let mut types = Vec::with_capacity(columns.len());
    for column in &columns {
        let pg_type = resolver
            .resolve(
                client,
                column.type_oid,
                &table.id,
                &column.name,
                &column.type_name,
            )
            .await?;
        schema_columns.push(Column {
            name: column.name.clone(),
            type_name: column.type_name.clone(),
            data_type: pg_type.data_type(&column.type_name),
            key: column.primary_key,
            nullable: !column.not_null,
        });
        types.push(pg_type);
    }
    Ok((columns, schema_columns, types))
}

/// Resolves type OIDs to decoders, caching what it learns.
pub(super) struct TypeResolver {
    cache: HashMap<u32, Option<PgType>>,
    unknown_types: UnknownTypes,
}

impl TypeResolver {
    pub(super) fn new(unknown_types: UnknownTypes) -> TypeResolver {
        TypeResolver {
            cache: HashMap::new(),
            unknown_types,
        }
    }

    /// The decoder of `oid` for `table`.`column`; an unmappable type is an error naming both,
    /// or text passthrough when configured.
    pub(super) async fn resolve(
        &mut self,
        client: &Client,
        oid: u32,
        table: &TableId,
        column: &str,
        type_name: &str,
    ) -> Result<PgType, PostgresError> {
        match self.lookup(client, oid).await? {
            Some(ty) => Ok(ty),
            None if self.unknown_types == UnknownTypes::Text => Ok(PgType::Passthrough),
            None => Err(PostgresError::UnknownType {
                table: table.to_string(),
                column: column.to_owned(),
                type_name: type_name.to_owned(),
            }),
        }
    }

    fn lookup<'a>(
        &'a mut self,
        client: &'a Client,
        oid: u32,
    ) -> Pin<Box<dyn Future<Output = Result<Option<PgType>, PostgresError>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(ty) = PgType::builtin(oid) {
                return Ok(Some(ty));
            }
            if let Some(cached) = self.cache.get(&oid) {
                return Ok(cached.clone());
            }
            let row = client
                .query_opt(
                    "SELECT typtype::text, typelem, typbasetype, typcategory::text, typname::text \
                     FROM pg_type WHERE oid = $1",
                    &[&oid],
                )
                .await?;
            let ty = match row {
                None => None,
                Some(row) => {
                    let (typtype, elem, base, category, name): (String, u32, u32, String, String) =
                        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
                    match (typtype.as_str(), category.as_str(), name.as_str()) {
                        ("e", _, _) => Some(PgType::Enum),
                        ("d", _, _) => self.lookup(client, base).await?,
                        (_, "A", _) if elem != 0 => self
                            .lookup(client, elem)
                            .await?
                            .map(|e| PgType::Array(Box::new(e))),
                        // Ranges and multiranges over any subtype, and the extensions' types
                        // whose text form is exact: read as that text.
                        ("r" | "m", _, _) | (_, _, "citext" | "ltree" | "lquery" | "ltxtquery") => {
                            Some(PgType::Text)
                        }
                        (_, _, "hstore") => Some(PgType::Hstore),
                        // Composite types, PostGIS and other extensions' base types.
                        _ => None,
                    }
                }
            };
            self.cache.insert(oid, ty.clone());
            Ok(ty)
        })
    }
}
