//! `sluice registry -c FILE`: the schema registry on its own, on the config's log and
//! `[registry] listen`, for a machine that serves schemas without running pipelines. The log
//! allows one process at a time, so while `sluice run` uses the same log, let it serve the
//! registry (`[registry] listen` does that) instead.

use anyhow::anyhow;

use crate::config::FileConfig;
use crate::run::{open_registry, shutdown_signal};
use crate::Failure;

pub(crate) fn serve(config: FileConfig) -> Result<(), Failure> {
    let Some(section) = &config.registry else {
        return Err(Failure::config(anyhow!(
            "the config has no [registry] section; add one with listen = \"127.0.0.1:8081\""
        )));
    };
    if config.log.kind == "kafka" {
        // Every process on a Kafka log assigns schema ids of its own (docs/operations.md).
        return Err(Failure::config(anyhow!(
            "sluice registry serves an embedded log's registry; on a log on Kafka let `sluice \
             run` serve it ([registry] listen = \"127.0.0.1:8081\" in the same config)"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    runtime.block_on(async {
        let listener = sluice_schema_registry::http::bind(&section.listen)
            .await
            .map_err(|e| Failure::config(anyhow!(e)))?;
        if !config.log.dir.join("control").is_dir() {
            // A mistyped dir would otherwise become a new, empty log served as if it were one.
            return Err(Failure::config(anyhow!(
                "{} holds no sluice log: point [log] dir at the log `sluice run` writes",
                config.log.dir.display()
            )));
        }
        let log = crate::backend::open(&config.log).await?;
        let registry = open_registry(log).await?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let server = sluice_core::task::spawn_in_span(sluice_schema_registry::http::serve(
            listener,
            registry,
            cancel.clone(),
        ));
        let signal = shutdown_signal().await;
        tracing::info!(signal, "stopping the registry");
        cancel.cancel();
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Failure::runtime(err)),
            Err(err) => Err(Failure::runtime(err)),
        }
    })
}
