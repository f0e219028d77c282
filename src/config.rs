//! The pipeline config file: TOML or YAML, loaded with the `config` crate, with environment
//! overrides `SLUICE__SECTION__KEY` (array entries by index: `SLUICE__SOURCES__0__URL`).
//! Unknown keys, missing fields and wrong types are errors that name the key and the file;
//! then every connector validates its own section, still without any I/O.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use sluice_connectors::{SinkConfig, SourceConfig};
use sluice_log::{FsyncPolicy, LogOptions};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub log: LogSection,
    /// Confluent-compatible schema registry API, e.g. `listen = "127.0.0.1:8081"`; served by
    /// `sluice run` and by `sluice registry`. Schemas are kept in the log either way.
    #[serde(default)]
    pub registry: Option<ListenSection>,
    /// Admin HTTP endpoint: the REST API, `/metrics` (Prometheus) and `/health`, e.g.
    /// `listen = "127.0.0.1:8083"`.
    #[serde(default)]
    pub api: Option<ApiSection>,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Per connector (`sources/<name>`, `sinks/<name>`), its entry as the file spells it: a
    /// config reload restarts the connectors whose entry changed.
    #[serde(skip)]
    pub fingerprints: std::collections::BTreeMap<String, String>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
// (A build without Kafka reads the Kafka fields only to refuse `kind = "kafka"`.)
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) struct LogSection {
    /// `embedded` (default: files under `dir`) or `kafka` (topics of a Kafka cluster at
    /// `brokers`; `dir` still holds what sluice keeps locally).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// `kind = "kafka"`: bootstrap brokers, `host:port,host:port`.
    #[serde(default)]
    pub brokers: Option<String>,
    /// `kind = "kafka"`: replication factor of the topics sluice creates. Default: the
    /// broker's.
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// `kind = "kafka"`: `min.insync.replicas` of the topics sluice creates. Default: the
    /// broker's.
    #[serde(default)]
    pub min_insync_replicas: Option<u32>,
    /// `kind = "kafka"`: librdkafka properties for every client (security, timeouts).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// `kind = "kafka"`: how the topics a pattern matches are created
    /// (`[[log.topic_settings]]`); the first matching pattern wins over the defaults.
    #[serde(default)]
    pub topic_settings: Vec<TopicSettingsSection>,
    /// Log directory. Default `data/log`.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// `always` (default: fsync before acknowledging), `interval:100ms`, or `never`.
    #[serde(default = "default_fsync")]
    pub fsync: String,
    /// Partitions of each new topic. Default 1.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Segment size in bytes before a new segment starts. Default 128 MiB.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// A segment also rolls after this many hours as the active one, so that time-based
    /// retention can delete it; 0 rolls by size only. Default 24.
    #[serde(default = "default_segment_hours")]
    pub segment_hours: u64,
    /// Committed segments whose last write is older than this are deleted; 0 keeps everything.
    /// Default 168 (7 days). A sink that falls further behind skips what was deleted.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Tombstones in compacted topics are kept this long, so readers see deletes. Default 24.
    #[serde(default = "default_tombstone_retention_hours")]
    pub tombstone_retention_hours: u64,
    /// Per-topic fsync policies (`[[log.topic_fsync]]`); the first matching pattern wins over
    /// `fsync`. Default none.
    #[serde(default)]
    pub topic_fsync: Vec<TopicFsync>,
    /// Oldest committed segments are deleted while a partition holds more than this. Default none.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// How data batches are compressed: `lz4` (default; Kafka's LZ4 frames, change events
    /// shrink 5–15×) or `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            kind: default_kind(),
            brokers: None,
            replication_factor: None,
            min_insync_replicas: None,
            properties: Default::default(),
            topic_settings: Vec::new(),
            dir: default_dir(),
            fsync: default_fsync(),
            partitions: default_partitions(),
            segment_bytes: default_segment_bytes(),
            segment_hours: default_segment_hours(),
            retention_hours: default_retention_hours(),
            tombstone_retention_hours: default_tombstone_retention_hours(),
            retention_bytes: None,
            topic_fsync: Vec::new(),
            compression: default_compression(),
        }
    }
}

fn default_kind() -> String {
    "embedded".into()
}
fn default_dir() -> PathBuf {
    PathBuf::from("data/log")
}
fn default_fsync() -> String {
    "always".into()
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_partitions() -> u32 {
    1
}
fn default_segment_hours() -> u64 {
    24
}
fn default_tombstone_retention_hours() -> u64 {
    24
}
fn default_retention_hours() -> u64 {
    168
}
fn default_segment_bytes() -> u64 {
    128 * 1024 * 1024
}

/// `[[log.topic_settings]]` (the log on Kafka): partitions, replication and topic configs of
/// the topics a pattern matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "kafka"), allow(dead_code))] // (read when opening the log on Kafka)
pub(crate) struct TopicSettingsSection {
    /// Topic name or pattern with `*` wildcards.
    pub topics: String,
    pub partitions: Option<u32>,
    pub replication_factor: Option<i32>,
    pub min_insync_replicas: Option<u32>,
    /// Topic configs as Kafka names them (`"retention.ms" = "604800000"`).
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
}

/// `[[log.topic_fsync]]`: an fsync policy for the topics a pattern matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicFsync {
    /// Topic name or pattern with `*` wildcards, e.g. `shop.public.page_views`.
    pub topics: String,
    /// `always`, `interval:<duration>` or `never`.
    pub fsync: String,
}

/// `[registry]` and `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenSection {
    pub listen: String,
}

/// `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiSection {
    pub listen: String,
    /// File holding the bearer token every write request must carry (a trailing newline is
    /// not part of it); `SLUICE_API_TOKEN` in the environment is the other way to give it.
    /// Without either, the API refuses every write.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Whether reads need the token too (`/health` never does). Default false.
    #[serde(default)]
    pub protect_reads: bool,
}

impl LogSection {
    pub(crate) fn options(&self) -> anyhow::Result<LogOptions> {
        Ok(LogOptions {
            fsync: parse_fsync(&self.fsync)?,
            segment_bytes: self.segment_bytes,
            segment_max_age: (self.segment_hours > 0)
                .then(|| Duration::from_secs(self.segment_hours * 3600)),
            retention: sluice_log::Retention {
                max_age: (self.retention_hours > 0)
                    .then(|| Duration::from_secs(self.retention_hours * 3600)),
                max_bytes: self.retention_bytes,
            },
            topic_fsync: self
                .topic_fsync
                .iter()
                .map(|t| Ok((t.topics.clone(), parse_fsync(&t.fsync)?)))
                .collect::<anyhow::Result<_>>()?,
            compression: match self.compression.as_str() {
                "lz4" => sluice_core::batch::Compression::Lz4,
                "none" => sluice_core::batch::Compression::None,
                other => bail!("log.compression: {other:?} is not one of lz4, none"),
            },
            ..LogOptions::default()
        })
    }
}

/// `always`, `never` or `interval:<n>ms|s`.
pub(crate) fn parse_fsync(text: &str) -> anyhow::Result<FsyncPolicy> {
    match text {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        other => {
            let spec = other.strip_prefix("interval:").ok_or_else(|| {
                anyhow!("log.fsync: {other:?} is not one of always, interval:<duration>, never")
            })?;
            let duration = if let Some(ms) = spec.strip_suffix("ms") {
                ms.parse().map(Duration::from_millis)
            } else if let Some(s) = spec.strip_suffix('s') {
                s.parse().map(Duration::from_secs)
            } else {
                bail!("log.fsync: {spec:?} needs a unit, e.g. interval:100ms or interval:1s")
            };
            let duration =
                duration.map_err(|_| anyhow!("log.fsync: {spec:?} is not a duration"))?;
            Ok(FsyncPolicy::Interval(duration))
        }
    }
}

/// Reads, overrides from the environment, deserializes and validates `path`.
pub(crate) fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => config::FileFormat::Toml,
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        _ => bail!(
            "{}: the config file must end in .toml, .yaml or .yml",
            path.display()
        ),
    };
    if !path.is_file() {
        bail!("{}: no such config file", path.display());
    }
    let mut builder = config::Config::builder().add_source(config::File::from(path).format(format));
    for (key, value) in std::env::vars() {
        if let Some(rest) = key.strip_prefix("SLUICE__") {
            builder = builder
                .set_override(env_key_path(rest), typed_env_value(value))
                .with_context(|| format!("environment variable {key}"))?;
        }
    }
    let raw = builder
        .build()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    check_kinds_built(&raw).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let config: FileConfig = raw.clone().try_deserialize().map_err(|e| {
        let text = describe(e);
        anyhow!(
            "{}: {}",
            path.display(),
            pinpoint(&raw, &text).unwrap_or(text)
        )
    })?;
    validate(&config).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut config = config;
    for section in ["sources", "sinks"] {
        let entries: Vec<serde_json::Value> = raw.get(section).unwrap_or_default();
        for entry in entries {
            if let Some(name) = entry.get("name").and_then(|n| n.as_str()) {
                config
                    .fingerprints
                    .insert(format!("{section}/{name}"), canonical(&entry));
            }
        }
    }
    resolve_paths(&mut config, path);
    // Compiled once here (regexes, conditions, salts read) so that `check` says what is wrong.
    for (i, sink) in config.sinks.iter().enumerate() {
        if let Err(e) = sluice_core::transform::Chain::new(sink.transforms()) {
            bail!("{}: sinks[{i}].{e} (sink {})", path.display(), sink.name());
        }
    }
    Ok(config)
}

/// `value` as JSON text with every object's keys in order (the config crate's maps keep no
/// order of their own, so one file read twice must give the same text).
fn canonical(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let fields: std::collections::BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            let inner: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// A section whose `kind` is a connector sluice has but this build was made without: say that,
/// rather than call the kind unknown.
fn check_kinds_built(raw: &config::Config) -> anyhow::Result<()> {
    for (section, known) in [
        ("sources", &sluice_connectors::SOURCE_KINDS[..]),
        ("sinks", &sluice_connectors::SINK_KINDS[..]),
    ] {
        let entries: Vec<serde_json::Value> = raw.get(section).unwrap_or_default();
        for (i, entry) in entries.iter().enumerate() {
            let Some(kind) = entry.get("kind").and_then(|k| k.as_str()) else {
                continue;
            };
            if known.contains(&kind) && !sluice_connectors::compiled_in(section, kind) {
                bail!(
                    "{section}[{i}].kind: this build of sluice has no {kind} connector (it was \
                     built without the `{kind}` feature); use a build with it (the default \
                     features have every connector)"
                );
            }
        }
    }
    Ok(())
}

/// Relative paths in the file (log dir, JSONL files, password files) are relative to the
/// file's own directory, whatever directory sluice runs in.
fn resolve_paths(config: &mut FileConfig, file: &Path) {
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let resolve = |path: &mut PathBuf| {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    };
    resolve(&mut config.log.dir);
    if let Some(path) = config.api.as_mut().and_then(|api| api.token_file.as_mut()) {
        resolve(path);
    }
    for source in &mut config.sources {
        source.resolve_paths(resolve);
    }
    for sink in &mut config.sinks {
        sink.resolve_paths(resolve);
    }
}

/// An environment value as the type it looks like: numbers and booleans become numbers and
/// booleans (string fields accept them back as text), anything else stays a string. Only
/// values that read back exactly are converted: `007` (a password, a name) stays `007`.
fn typed_env_value(value: String) -> config::Value {
    match (value.parse::<i64>(), value.parse::<bool>()) {
        (Ok(number), _) if number.to_string() == value => number.into(),
        (_, Ok(flag)) => flag.into(),
        _ => value.into(),
    }
}

/// `SOURCES__0__URL` → `sources[0].url`.
fn env_key_path(rest: &str) -> String {
    let mut path = String::new();
    for part in rest.split("__") {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&part.to_ascii_lowercase());
        }
    }
    path
}

/// For an error the config crate places at a whole `sources[N]`/`sinks[N]` entry, the field
/// it is really about: `sources[0].max_batch_events: invalid type: string "many", expected usize`.
fn pinpoint(raw: &config::Config, text: &str) -> Option<String> {
    for section in ["sources", "sinks"] {
        let marker = format!("for key `{section}[");
        let Some(start) = text.find(&marker) else {
            continue;
        };
        let rest = &text[start + marker.len()..];
        let index: usize = rest[..rest.find(']')?].parse().ok()?;
        let key = format!("{section}[{index}]");
        let entry: serde_json::Value = raw.get(&key).ok()?;
        let located = sluice_connectors::locate_config_error(section, entry)?;
        return Some(format!("{key}.{located}"));
    }
    None
}

/// The config crate's messages, made to say which key is wrong.
fn describe(error: config::ConfigError) -> String {
    let text = error.to_string().replace("unknown variant", "unknown kind");
    // The crate writes `sources[0]url`; make it the `sources[0].url` the docs use.
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|next| next.is_ascii_alphabetic()) {
            out.push('.');
        }
    }
    out
}

#[cfg(feature = "kafka")]
fn check_kafka_log(log: &LogSection) -> anyhow::Result<()> {
    match log.brokers.as_deref() {
        None => bail!("log.brokers: name the Kafka brokers, e.g. \"127.0.0.1:9092\""),
        Some(brokers) => sluice_connectors::kafka::config::check_brokers(brokers)
            .map_err(|e| anyhow!("log.brokers: {e}")),
    }
}

#[cfg(not(feature = "kafka"))]
fn check_kafka_log(_: &LogSection) -> anyhow::Result<()> {
    bail!(
        "log.kind: this build of sluice has no Kafka support (built without the `kafka` \
         feature); use a build with it (the default build has it)"
    )
}

fn validate(config: &FileConfig) -> anyhow::Result<()> {
    match config.log.kind.as_str() {
        "embedded" if !config.log.topic_settings.is_empty() => bail!(
            "log.topic_settings: settings of topics on Kafka (kind = \"kafka\"); the embedded \
             log takes log.partitions and [[log.topic_fsync]]"
        ),
        "embedded" => {}
        "kafka" => check_kafka_log(&config.log)?,
        other => bail!("log.kind: {other:?} is not a log; use \"embedded\" or \"kafka\""),
    }
    config.log.options()?;
    if !(1..=1024).contains(&config.log.partitions) {
        bail!("log.partitions: must be between 1 and 1024");
    }
    for (i, settings) in config.log.topic_settings.iter().enumerate() {
        if settings
            .partitions
            .is_some_and(|n| !(1..=1024).contains(&n))
        {
            bail!("log.topic_settings[{i}].partitions: must be between 1 and 1024");
        }
        if settings.topics.is_empty() {
            bail!("log.topic_settings[{i}].topics: name a topic or a pattern (shop.public.*)");
        }
    }
    if config.log.segment_bytes < 1024 * 1024 {
        bail!("log.segment_bytes: must be at least 1 MiB");
    }
    if config.sources.is_empty() && config.sinks.is_empty() && config.registry.is_none() {
        bail!("no [[sources]], [[sinks]] or [registry]: nothing to run");
    }
    let mut names = std::collections::HashSet::new();
    for (i, source) in config.sources.iter().enumerate() {
        source.validate(&format!("sources[{i}]"))?;
        if !names.insert(format!("source:{}", source.name())) {
            bail!("sources[{i}].name: {:?} is used twice", source.name());
        }
    }
    for (i, sink) in config.sinks.iter().enumerate() {
        sink.validate(&format!("sinks[{i}]"))?;
        if !names.insert(format!("sink:{}", sink.name())) {
            bail!("sinks[{i}].name: {:?} is used twice", sink.name());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_keys_map_to_config_paths() {
        assert_eq!(env_key_path("SOURCES__0__URL"), "sources[0].url");
        assert_eq!(env_key_path("LOG__FSYNC"), "log.fsync");
    }

    /// Every sink's transform files (a mask's salt) are relative to the config file, as its
    /// other files are (the JSONL and Kafka sinks once left them relative to the working
    /// directory).
    #[test]
    #[cfg(all(feature = "jsonl", feature = "kafka"))]
    fn transform_files_are_relative_to_the_config_file() {
        use sluice_core::transform::TransformConfig;
        let dir = std::env::temp_dir().join(format!("sluice-config-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("salt"), "a-salt-of-more-than-sixteen-bytes").unwrap();
        let mask =
            "[[sinks.transforms]]\ntype = \"mask\"\ncolumns = [\"email\"]\nsalt_file = \"salt\"\n";
        let file = dir.join("sluice.toml");
        std::fs::write(
            &file,
            format!(
                "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"out.jsonl\"\ntopics = [\"*\"]\n{mask}\n\
                 [[sinks]]\nname = \"bus\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopics = [\"*\"]\n{mask}"
            ),
        )
        .unwrap();
        let config = load(&file).unwrap();
        for sink in &config.sinks {
            match sink.transforms() {
                [TransformConfig::Mask(mask)] => assert_eq!(
                    mask.salt_file.as_deref(),
                    Some(dir.join("salt").as_path()),
                    "{}",
                    sink.name()
                ),
                other => panic!("{}: {other:?}", sink.name()),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fsync_policies_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_fsync("interval:100ms").unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(100))
        );
        assert_eq!(
            parse_fsync("interval:2s").unwrap(),
            FsyncPolicy::Interval(Duration::from_secs(2))
        );
        assert!(parse_fsync("sometimes")
            .unwrap_err()
            .to_string()
            .contains("log.fsync"));
        assert!(parse_fsync("interval:5")
            .unwrap_err()
            .to_string()
            .contains("unit"));
    }
}
