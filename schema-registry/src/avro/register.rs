//! Registering table versions in the schema registry, once per version: what both encoders
//! do (Avro to write schema ids; JSON so that records can name their table version, see
//! `crate::changes`). A version the registry refuses for the table's topic is reported, not
//! an error: the runtime then holds the table back under its held topic's subjects, and
//! `release` later registers the held versions under the topic's own.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_core::encode::{EncodeError, TableVersion};
use sluice_core::event::{TableId, TableSchema};
use sluice_core::topic;

use super::schema::{self, DecimalHandling, TablePlan};
use crate::json::SourceBlock;
use crate::registry::{Level, NewSchema, Registry, RegistryError, SchemaType, VersionSpec};

sluice_core::reason_error!(
    /// Why the registry refused a table version (the table is then held back).
    pub(crate) Refusal
);

pub(crate) struct RegisteredTable {
    /// The table version the plan was made for (versions alone are not unique: a source may
    /// restart its numbering, e.g. between snapshot and stream or across restarts).
    pub(crate) schema: Arc<TableSchema>,
    pub(crate) plan: TablePlan,
    pub(crate) key_id: Option<u32>,
    pub(crate) value_id: u32,
}

/// Registers each table version's key and value schemas, once: what both encoders do (the
/// JSON encoder so that its records can name their table version, see `crate::changes`).
#[derive(Clone)]
pub(crate) struct Registrar {
    registry: Arc<Registry>,
    source: SourceBlock,
    decimals: DecimalHandling,
    tables: HashMap<(TableId, u32), Arc<RegisteredTable>>,
    message_value_id: Option<u32>,
    /// The transaction topic's key and value schema ids, once registered.
    transaction_ids: Option<(u32, u32)>,
}

impl Registrar {
    pub(crate) fn new(
        registry: Arc<Registry>,
        source: SourceBlock,
        decimals: DecimalHandling,
    ) -> Registrar {
        Registrar {
            registry,
            source,
            decimals,
            tables: HashMap::new(),
            message_value_id: None,
            transaction_ids: None,
        }
    }

    fn register(&self, subject: &str, schema: &serde_json::Value) -> Result<u32, RegistryError> {
        self.registry.register(
            subject,
            &NewSchema {
                schema_type: SchemaType::Avro,
                text: &schema.to_string(),
                id: None,
                version: None,
            },
        )
    }

    /// The registration of `table`'s version, registering it the first time; a refusal by
    /// the registry is an error (the runtime readies every version first, see `prepare`).
    pub(crate) fn table(
        &mut self,
        table: &Arc<TableSchema>,
    ) -> Result<Arc<RegisteredTable>, EncodeError> {
        self.table_for(table, false)?
            .map_err(|refusal| EncodeError {
                table: table.table.to_string(),
                reason: refusal.0,
            })
    }

    /// `EventEncoder::prepare_table`.
    pub(crate) fn prepare(
        &mut self,
        table: &Arc<TableSchema>,
        held: bool,
    ) -> Result<TableVersion, EncodeError> {
        Ok(match self.table_for(table, held)? {
            Ok(_) => TableVersion::Ready,
            Err(refusal) => TableVersion::Refused { reason: refusal.0 },
        })
    }

    /// Registers `table`'s version under its topic's subjects (with `held`, its held topic's,
    /// set to take any version): the registration, or the registry's refusal.
    fn table_for(
        &mut self,
        table: &Arc<TableSchema>,
        held: bool,
    ) -> Result<Result<Arc<RegisteredTable>, Refusal>, EncodeError> {
        let cache_key = (table.table.clone(), table.version);
        if let Some(found) = self.tables.get(&cache_key) {
            if Arc::ptr_eq(&found.schema, table) || found.schema.columns == table.columns {
                return Ok(Ok(Arc::clone(found)));
            }
        }
        let fail = |reason: String| EncodeError {
            table: table.table.to_string(),
            reason,
        };
        let plan = schema::table_plan(&self.source.name, &self.source, table, self.decimals)
            .map_err(|e| fail(e.0))?;
        let mut topic = topic::table_topic(&self.source.name, &table.table);
        if held {
            topic = topic::held_topic(&topic);
            for suffix in ["-key", "-value"] {
                self.registry
                    .set_compatibility(Some(&format!("{topic}{suffix}")), Level::None)
                    .map_err(|e| fail(format!("holding the table back: {}", e.message)))?;
            }
        }
        let describe = |subject: &str, err: &RegistryError| {
            let fix = if err.code == 409 {
                format!(
                    ". If consumers can cope with the change, relax the subject's level \
                     (PUT /config/{subject} {{\"compatibility\":\"NONE\"}} on the registry) and \
                     restart; otherwise revert the table change"
                )
            } else {
                String::new()
            };
            // The envelope's row record is where columns live: say "column" to the user.
            let message = err
                .message
                .replace("field 'before.", "column '")
                .replace("field 'after.", "column '");
            format!(
                "registering schema version {} of the table under subject {subject}: {message}{fix}",
                table.version
            )
        };
        let register =
            |subject: String, schema: &serde_json::Value| match self.register(&subject, schema) {
                Ok(id) => Ok(Ok(id)),
                Err(err) if err.code == 409 => Ok(Err(describe(&subject, &err))),
                Err(err) => Err(fail(describe(&subject, &err))),
            };
        let key_id = match &plan.key_schema {
            Some(key) => match register(format!("{topic}-key"), key)? {
                Ok(id) => Some(id),
                Err(refused) => return Ok(Err(Refusal(refused))),
            },
            None => None,
        };
        let value_id = match register(format!("{topic}-value"), &plan.value_schema)? {
            Ok(id) => id,
            Err(refused) => return Ok(Err(Refusal(refused))),
        };
        let registered = Arc::new(RegisteredTable {
            schema: Arc::clone(table),
            plan,
            key_id,
            value_id,
        });
        self.tables.insert(cache_key, Arc::clone(&registered));
        Ok(Ok(registered))
    }

    /// `EventEncoder::release_held`: registers under `topic`'s subjects every version held
    /// under `held_topic`'s, oldest first.
    pub(crate) fn release(
        &mut self,
        held_topic: &str,
        topic: &str,
    ) -> Result<TableVersion, EncodeError> {
        let fail = |reason: String| EncodeError {
            table: topic.to_owned(),
            reason,
        };
        for suffix in ["-key", "-value"] {
            let held_subject = format!("{held_topic}{suffix}");
            let Ok(versions) = self.registry.versions(&held_subject, false) else {
                continue; // nothing held under this subject (a table without a key)
            };
            let subject = format!("{topic}{suffix}");
            for version in versions {
                let held = self
                    .registry
                    .version(&held_subject, VersionSpec::Number(version), false)
                    .map_err(|e| fail(e.message))?;
                let schema: serde_json::Value =
                    serde_json::from_str(&held.schema).map_err(|e| fail(e.to_string()))?;
                match self.register(&subject, &schema) {
                    Ok(_) => {}
                    Err(err) if err.code == 409 => {
                        return Ok(TableVersion::Refused {
                            reason: format!(
                                "registering the held version under subject {subject}: {}. Relax \
                                 the subject's level (PUT /config/{subject} \
                                 {{\"compatibility\":\"NONE\"}} on the registry) and restart",
                                err.message
                            ),
                        })
                    }
                    Err(err) => return Err(fail(err.message)),
                }
            }
        }
        Ok(TableVersion::Ready)
    }

    /// The ids of the transaction topic's key and value schemas, registering them the first
    /// time.
    pub(crate) fn transaction_ids(&mut self) -> Result<(u32, u32), EncodeError> {
        if let Some(ids) = self.transaction_ids {
            return Ok(ids);
        }
        let topic = topic::transaction_topic(&self.source.name);
        let mut ids = [0; 2];
        for (id, (part, schema)) in ids.iter_mut().zip([
            ("key", schema::transaction_key_schema()),
            ("value", schema::transaction_value_schema()),
        ]) {
            let subject = format!("{topic}-{part}");
            *id = self.register(&subject, &schema).map_err(|e| EncodeError {
                table: "transaction metadata".into(),
                reason: format!("registering under subject {subject}: {}", e.message),
            })?;
        }
        self.transaction_ids = Some((ids[0], ids[1]));
        Ok((ids[0], ids[1]))
    }

    /// The id of the logical-message value schema, registering it the first time.
    pub(crate) fn message_value_id(&mut self) -> Result<u32, EncodeError> {
        if let Some(id) = self.message_value_id {
            return Ok(id);
        }
        let subject = format!("{}-value", topic::message_topic(&self.source.name));
        let id = self
            .register(&subject, &schema::message_schema(&self.source))
            .map_err(|e| EncodeError {
                table: "messages".into(),
                reason: format!("registering under subject {subject}: {}", e.message),
            })?;
        self.message_value_id = Some(id);
        Ok(id)
    }
}
