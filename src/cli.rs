//! Command-line interface (clap) and dispatch to the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_core::position::Position;

use crate::{config, log_cmd, registry_cmd, run, status, Failure};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Change data capture: database WAL and binlogs into a durable log, out to sinks"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the pipelines of a config file until Ctrl-C or SIGTERM.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Stop cleanly once a source has made durable a transaction at or past this position
        /// (e.g. `pg:16/B374D848`) and the sinks have delivered everything the log holds, as
        /// for a cut-over.
        #[arg(long, value_name = "POSITION")]
        stop_at: Option<Position>,
        /// Run only the config's sources, or only its sinks: on a log on Kafka, one process
        /// runs the sources and any number run the sinks, sharing each sink's partitions.
        #[arg(long, value_enum, value_name = "ROLE")]
        only: Option<Role>,
    },
    /// Validate a config file without connecting; with --connect, also probe each server.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Connect to each source and check its server settings, privileges and tables.
        #[arg(long)]
        connect: bool,
    },
    /// Where each source and sink stands: committed position, slot and WAL held, sink lag.
    Status {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Serve the schema registry (Confluent's REST API) of a config's log on its own, on
    /// `[registry] listen`, until Ctrl-C or SIGTERM.
    Registry {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running (or the next) `sluice run` for an on-demand snapshot of tables: their
    /// rows are read in chunks while the stream goes on (Postgres sources; MySQL/MariaDB
    /// sources through their `signal_table`).
    Snapshot {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The source, by its name in the config.
        source: String,
        /// Tables as schema.table (database.table on MySQL/MariaDB).
        #[arg(required = true)]
        tables: Vec<String>,
        /// Only rows matching this SQL condition, e.g. "created_at > now() - interval '1 day'".
        #[arg(long = "where", value_name = "CONDITION")]
        filter: Option<String>,
    },
    /// Rebuild an OpenSearch sink's index for one table from the log into a fresh index and
    /// move the index's name (made an alias) onto it: a mapping change without downtime. Runs
    /// beside `sluice run`; the log must still hold the table's history from offset 0.
    Reindex {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The sink, by its name in the config.
        sink: String,
        /// The table: schema.table, table, or its whole topic name.
        table: String,
    },
    /// Inspect the embedded log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Args, Clone)]
pub(crate) struct LogLocation {
    /// Config file whose [log] to read (its dir, or its Kafka cluster).
    #[arg(short, long, value_name = "FILE", conflicts_with = "dir")]
    pub config: Option<PathBuf>,
    /// The log directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum LogCommand {
    /// List topics with their partitions and offsets.
    Topics {
        #[command(flatten)]
        location: LogLocation,
    },
    /// Show a topic's partitions: offsets, segments, bytes.
    Describe {
        topic: String,
        #[command(flatten)]
        location: LogLocation,
    },
    /// Print the records of a topic.
    Tail {
        topic: String,
        #[command(flatten)]
        location: LogLocation,
        /// Start at the first record (default: only new records with --follow, else everything).
        #[arg(long)]
        from_beginning: bool,
        /// Start at this offset in every partition.
        #[arg(long, value_name = "N", conflicts_with = "from_beginning")]
        from_offset: Option<u64>,
        /// Start at the first record at or after this time: RFC 3339 (2024-01-02T03:04:05Z) or
        /// milliseconds since the Unix epoch.
        #[arg(long, value_name = "TIME", conflicts_with_all = ["from_beginning", "from_offset"])]
        from_time: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Keep printing records as they are committed.
        #[arg(long)]
        follow: bool,
    },
    /// Show a consumer group's committed offsets.
    Offsets {
        group: String,
        #[command(flatten)]
        location: LogLocation,
    },
    /// After the log refused to open because committed data is damaged: move the damaged
    /// bytes aside, keep every record that still verifies, and report exactly which offsets
    /// are lost. Run with the pipeline stopped, after copying the log directory.
    Repair {
        #[command(flatten)]
        location: LogLocation,
    },
}

/// Keeps only the connectors `sluice run --only` runs.
pub(crate) fn only_role(config: &mut config::FileConfig, only: Option<Role>) {
    match only {
        Some(Role::Sources) => config.sinks.clear(),
        Some(Role::Sinks) => config.sources.clear(),
        None => {}
    }
}

/// What `sluice run --only` runs.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Role {
    Sources,
    Sinks,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per record: topic, partition, offset, timestamp, key, value.
    Json,
    /// The value bytes, one record per line (Avro values decoded to JSON).
    Raw,
    /// One JSON object per record with key and value bytes exactly as stored, in base64: for
    /// feeding records to other tools (e.g. Confluent's deserializers).
    Base64,
}

pub(crate) fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run {
            config,
            stop_at,
            only,
        } => {
            let mut loaded = config::load(&config).map_err(Failure::config)?;
            only_role(&mut loaded, only);
            run::run(loaded, stop_at, run::Reloads { path: config, only })
        }
        Command::Check { config, connect } => {
            let loaded = config::load(&config).map_err(Failure::config)?;
            println!(
                "{}: valid ({} source(s), {} sink(s), log at {})",
                config.display(),
                loaded.sources.len(),
                loaded.sinks.len(),
                loaded.log.dir.display()
            );
            crate::check::transforms(&loaded)?;
            if connect {
                run::probe(&loaded)?;
            }
            Ok(())
        }
        Command::Status { config } => {
            let loaded = config::load(&config).map_err(Failure::config)?;
            status::status(&loaded)
        }
        Command::Registry { config } => {
            let loaded = config::load(&config).map_err(Failure::config)?;
            registry_cmd::serve(loaded)
        }
        Command::Snapshot {
            config,
            source,
            tables,
            filter,
        } => {
            let loaded = config::load(&config).map_err(Failure::config)?;
            run::request_snapshot(&loaded, &source, &tables, filter.as_deref())
        }
        Command::Reindex {
            config,
            sink,
            table,
        } => {
            let loaded = config::load(&config).map_err(Failure::config)?;
            #[cfg(feature = "opensearch")]
            return crate::reindex::reindex(&loaded, &sink, &table);
            #[cfg(not(feature = "opensearch"))]
            {
                let _ = (loaded, sink, table);
                Err(Failure::config(anyhow::anyhow!(
                    "this sluice was built without the opensearch feature"
                )))
            }
        }
        Command::Log { command } => log_cmd::dispatch(command),
    }
}
