//! Topic names and partition choice for source events.
//!
//! Topics are `<source>.<schema>.<table>` (Postgres) or `<source>.<database>.<table>` (MySQL).
//! Schema and table names are escaped, not replaced (Debezium's `_` for every character the
//! log refuses made "a b" and "a_b" one topic): distinct tables always get distinct topics,
//! and names of letters, digits and `_` are kept as they are. Records go to the
//! partition Kafka's default partitioner would pick for the same key bytes (murmur2), so that
//! moving the log to Kafka keeps every key in the partition it had.

use crate::event::{ChangeEvent, TableId};

/// The topic for a table's events.
pub fn table_topic(source: &str, table: &TableId) -> String {
    // Source names are letters, digits, `_` and `-` (validated), so the first `.` ends them.
    format!(
        "{source}.{}.{}",
        sanitize(&table.namespace),
        sanitize(&table.name)
    )
}

/// The topic that holds a source's own history records (see `SourceBatch::history`). Internal
/// (a leading `_`): sinks read it only when a pattern names it.
pub fn history_topic(source: &str) -> String {
    format!("_sluice_history.{source}")
}

/// Where a table's events wait while the registry refuses its new schema version (see
/// `pipeline::source_task::held`): `_held.<topic>`, internal, so no `*` pattern reads it.
pub fn held_topic(topic: &str) -> String {
    format!("{HELD_PREFIX}{topic}")
}

/// The table topic a held topic stands for.
pub fn unheld(held_topic: &str) -> Option<&str> {
    held_topic.strip_prefix(HELD_PREFIX)
}

const HELD_PREFIX: &str = "_held.";

/// The header on a held-back table's records, saying why it is held.
pub const HELD_HEADER: &str = "sluice.held";

/// The log writer that copies a source's released events into their topics; its checkpoint
/// says how far each held topic's partitions have been released (`{held topic: {partition:
/// next offset}}`).
pub fn release_writer(source: &str) -> String {
    format!("{source}.release")
}

/// The topic of a source's transaction boundary records (`BEGIN`/`END`, with its
/// `transaction_metadata` on): Debezium's `<topic.prefix>.transaction`.
pub fn transaction_topic(source: &str) -> String {
    format!("{source}.transaction")
}

/// The header on transaction boundary records (`BEGIN` or `END`): sinks that apply row
/// changes pass over such records, the Kafka sink delivers them as they are.
pub const BOUNDARY_HEADER: &str = "sluice.transaction";

/// The topic for events without a table (logical messages).
pub fn message_topic(source: &str) -> String {
    format!("{source}.message")
}

pub fn event_topic(source: &str, event: &ChangeEvent) -> String {
    match &event.table {
        Some(schema) => table_topic(source, &schema.table),
        None => message_topic(source),
    }
}

/// A schema or table name as one part of a topic name, escaped so that distinct names stay
/// distinct topics: letters, digits and `_` are kept; any other character (a `.` inside the
/// name, `-`, spaces, non-ASCII) becomes `-` + its code point in hex + `-`, so `-` only ever
/// starts an escape and the mapping can be undone.
fn sanitize(name: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            let _ = write!(out, "-{:x}-", u32::from(c));
        }
    }
    out
}

/// Kafka's murmur2 of `key`, as its default partitioner computes it.
pub fn murmur2(key: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let len = key.len();
    let mut h = SEED ^ (len as u32);
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Partition for a record key; records without a key go to partition 0.
///
/// An Avro key's Confluent header (magic byte 0 and schema id) is left out of the hash, so that
/// a key stays in its partition, and in order, when its table's key schema gets a new version.
/// (JSON keys start with `{`, never with a zero byte.)
pub fn partition_for(key: Option<&[u8]>, partitions: u32) -> u32 {
    match key {
        Some(key) if partitions > 1 => {
            let datum = match key {
                [0, _, _, _, _, datum @ ..] => datum,
                _ => key,
            };
            (murmur2(datum) & 0x7fff_ffff) % partitions
        }
        _ => 0,
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (topic and
/// table patterns, per-topic log settings).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Whether a consumer's topic `pattern` takes `topic`: as `glob_match`, except that topics
/// starting with `_` (sluice's `_schemas`, Kafka's and Debezium's own) are taken only by
/// patterns that start with `_` too, so `*` means every change topic.
pub fn pattern_takes(pattern: &str, topic: &str) -> bool {
    glob_match(pattern, topic) && (!topic.starts_with('_') || pattern.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_internal_topics_only_when_they_say_so() {
        assert!(pattern_takes("*", "shop.public.t"));
        assert!(!pattern_takes("*", "_schemas"));
        assert!(!pattern_takes("*", "__debezium-heartbeat.shop"));
        assert!(pattern_takes("_*", "_schemas"));
        assert!(pattern_takes("_schemas", "_schemas"));
    }

    #[test]
    fn glob_patterns_match_with_wildcards() {
        assert!(glob_match("shop.public.*", "shop.public.orders"));
        assert!(glob_match("shop.*.orders", "shop.public.orders"));
        assert!(glob_match("shop.public.orders", "shop.public.orders"));
        assert!(!glob_match("shop.public.orders", "shop.public.orders2"));
        assert!(!glob_match("shop.public.*", "shop.private.orders"));
        assert!(glob_match("*", "anything"));
    }

    #[test]
    fn avro_keys_keep_their_partition_across_key_schema_versions() {
        let datum = [0x02, 0x06, b'a', b'b', b'c'];
        let with_id = |id: u32| {
            let mut key = vec![0];
            key.extend_from_slice(&id.to_be_bytes());
            key.extend_from_slice(&datum);
            key
        };
        for partitions in [2, 3, 7, 16] {
            let expected = partition_for(Some(&datum), partitions);
            assert_eq!(partition_for(Some(&with_id(1)), partitions), expected);
            assert_eq!(partition_for(Some(&with_id(977)), partitions), expected);
        }
        // JSON keys hash whole.
        let json = br#"{"id":1}"#;
        assert_eq!(
            partition_for(Some(json), 16),
            (murmur2(json) & 0x7fff_ffff) % 16
        );
    }

    #[test]
    fn murmur2_matches_kafkas_reference_values() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn topic_names_replace_characters_the_log_refuses() {
        let table = TableId {
            namespace: "public".into(),
            name: "Order Lines$".into(),
        };
        assert_eq!(
            table_topic("shop", &table),
            "shop.public.Order-20-Lines-24-"
        );
    }

    #[test]
    fn distinct_tables_never_share_a_topic() {
        let topic = |namespace: &str, name: &str| {
            table_topic(
                "s",
                &TableId {
                    namespace: namespace.into(),
                    name: name.into(),
                },
            )
        };
        let names = [
            ("public", "Größe 🚀"),
            ("public", "Größe 🔥"),
            ("public", "a b"),
            ("public", "a_b"),
            ("public", "a-b"),
            ("public", "a-2d-b"),
            ("public.a", "b"),
            ("public", "a.b"),
            ("public", "orders"),
        ];
        let topics: std::collections::HashSet<String> =
            names.iter().map(|(n, t)| topic(n, t)).collect();
        assert_eq!(topics.len(), names.len(), "{topics:?}");
        assert_eq!(topic("public", "orders"), "s.public.orders");
    }
}
