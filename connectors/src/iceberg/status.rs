//! What `sluice check --connect` and `sluice status` ask of the catalog for an Iceberg sink.

use super::catalog::Catalog;
use super::{commit, connect, IcebergError, IcebergSinkConfig};

/// `sluice check --connect`: the catalog answers and the namespace exists or can be made.
pub async fn probe(config: &IcebergSinkConfig) -> Result<String, IcebergError> {
    let catalog = Catalog::connect(connect(config)?, config.warehouse.as_deref()).await?;
    catalog.ensure_namespace(&config.namespace).await?;
    let tables = catalog.list_tables(&config.namespace).await?;
    Ok(format!(
        "Iceberg REST catalog at {}; namespace {} with {} tables",
        catalog.base(),
        config.namespace,
        tables.len()
    ))
}

/// `sluice status`: each table's last commit of this sink, and its time.
pub async fn server_status(config: &IcebergSinkConfig) -> Result<Vec<String>, IcebergError> {
    let catalog = Catalog::connect(connect(config)?, config.warehouse.as_deref()).await?;
    let mut lines = vec![format!("Iceberg REST catalog at {}", catalog.base())];
    let key = commit::offsets_key(&config.name);
    for name in catalog.list_tables(&config.namespace).await? {
        let Some(meta) = catalog.load_table(&config.namespace, &name).await? else {
            continue;
        };
        let Some(snapshot) = meta
            .current
            .as_ref()
            .filter(|s| s.summary.contains_key(&key))
        else {
            continue;
        };
        let mut at = String::new();
        sluice_core::value::write_utc_timestamp(&mut at, snapshot.timestamp_ms * 1000);
        lines.push(format!(
            "{}.{name}: snapshot {} (sequence {}) committed at {at}; metadata {}",
            config.namespace,
            snapshot.id,
            snapshot.sequence_number,
            meta.metadata_location.as_deref().unwrap_or("(not given)")
        ));
    }
    if lines.len() == 1 {
        lines.push("no table committed yet".into());
    }
    Ok(lines)
}
