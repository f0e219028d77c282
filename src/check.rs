//! `sluice check`: beyond the file itself, the sinks' transforms held against every table the
//! log already knows (the latest version of each), so that a transform naming a column a
//! table lacks is refused before `sluice run` meets it. Tables the log does not hold yet are
//! checked when their first change reaches the sink (which then stops with the same message).

use anyhow::anyhow;
use sluice_core::topic::pattern_takes;
use sluice_core::transform::Chain;
use sluice_schema_registry::changes::registered_table;
use sluice_schema_registry::registry::VersionSpec;

use crate::config::FileConfig;
use crate::Failure;

pub(crate) fn transforms(config: &FileConfig) -> Result<(), Failure> {
    let sinks: Vec<_> = config
        .sinks
        .iter()
        .enumerate()
        .filter(|(_, sink)| !sink.transforms().is_empty())
        .collect();
    if sinks.is_empty() {
        return Ok(());
    }
    if config.log.kind == "kafka" {
        println!(
            "transforms: compiled; each table is checked when its first change reaches the sink"
        );
        return Ok(());
    }
    let Ok(log) = crate::backend::open_read_only(&config.log.dir) else {
        println!("transforms: compiled; the log holds no tables yet, so each is checked when its first change reaches the sink");
        return Ok(());
    };
    let registry = crate::backend::command_runtime()?.block_on(crate::run::open_registry(log))?;
    let mut checked = 0;
    for subject in registry.subjects(false) {
        let Some(topic) = subject.strip_suffix("-value") else {
            continue;
        };
        let Ok(version) = registry.version(&subject, VersionSpec::Latest, false) else {
            continue;
        };
        let Ok(Some(table)) = registered_table(&registry, version.id) else {
            continue;
        };
        for (i, sink) in &sinks {
            if !sink.topics().iter().any(|p| pattern_takes(p, topic)) {
                continue;
            }
            let refused = |e| Failure::config(anyhow!("sinks[{i}].{e} (sink {})", sink.name()));
            Chain::new(sink.transforms())
                .and_then(|mut chain| chain.check(&table, topic))
                .map_err(refused)?;
            checked += 1;
        }
    }
    println!("transforms: fit the {checked} table(s) the log holds for them");
    Ok(())
}
