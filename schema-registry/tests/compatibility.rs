//! Avro and JSON Schema compatibility, rule by rule (../shared/reference/schema-registry.md),
//! through the registry's levels.

use sluice_schema_registry::registry::compat::{can_read, check, Level};
use sluice_schema_registry::registry::store::MemoryStore;
use sluice_schema_registry::registry::{parse_schema, NewSchema, Registry, SchemaType};

fn avro(text: &str) -> sluice_schema_registry::registry::Parsed {
    parse_schema(SchemaType::Avro, text).unwrap().1
}

fn json(text: &str) -> sluice_schema_registry::registry::Parsed {
    parse_schema(SchemaType::Json, text).unwrap().1
}

/// `(writer, reader)` can read: Ok, or the reason.
fn reads(writer: &str, reader: &str) -> Result<(), String> {
    can_read(&avro(writer), &avro(reader)).map_err(|e| e.0)
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"a.b","fields":[{fields}]}}"#)
}

#[test]
fn fields_match_by_name_and_new_reader_fields_need_defaults() {
    let old = record(r#"{"name":"a","type":"int"}"#);
    let added_default =
        record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":"x"}"#);
    let added_plain = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
    assert_eq!(reads(&old, &added_default), Ok(()));
    let err = reads(&old, &added_plain).unwrap_err();
    assert!(
        err.contains("field 'b' is only in the reader and has no default"),
        "{err}"
    );
    // Writer-only fields are skipped by the reader.
    assert_eq!(reads(&added_plain, &old), Ok(()));
}

#[test]
fn primitive_promotions() {
    for (w, r, ok) in [
        ("int", "long", true),
        ("int", "float", true),
        ("int", "double", true),
        ("long", "float", true),
        ("long", "double", true),
        ("float", "double", true),
        ("string", "bytes", true),
        ("bytes", "string", true),
        ("long", "int", false),
        ("double", "float", false),
        ("string", "int", false),
        ("boolean", "int", false),
    ] {
        let writer = record(&format!(r#"{{"name":"a","type":"{w}"}}"#));
        let reader = record(&format!(r#"{{"name":"a","type":"{r}"}}"#));
        let result = reads(&writer, &reader);
        assert_eq!(result.is_ok(), ok, "{w} → {r}: {result:?}");
        if !ok {
            let err = result.unwrap_err();
            assert!(err.contains("field 'a'"), "{err}");
            assert!(err.contains(&format!("from {w} to {r}")), "{err}");
        }
    }
}

#[test]
fn named_types_match_by_unqualified_name() {
    let writer =
        r#"{"type":"record","name":"R","namespace":"one","fields":[{"name":"a","type":"int"}]}"#;
    let moved =
        r#"{"type":"record","name":"R","namespace":"two","fields":[{"name":"a","type":"int"}]}"#;
    let renamed =
        r#"{"type":"record","name":"S","namespace":"one","fields":[{"name":"a","type":"int"}]}"#;
    assert_eq!(reads(writer, moved), Ok(()));
    let err = reads(writer, renamed).unwrap_err();
    assert!(err.contains("renamed to S"), "{err}");
}

#[test]
fn reader_field_aliases_match_renamed_fields() {
    let writer = record(r#"{"name":"old_name","type":"int"}"#);
    let aliased = record(r#"{"name":"new_name","type":"int","aliases":["old_name"]}"#);
    let plain = record(r#"{"name":"new_name","type":"int"}"#);
    assert_eq!(reads(&writer, &aliased), Ok(()));
    assert!(reads(&writer, &plain).is_err());
}

#[test]
fn enums_need_the_writers_symbols_unless_the_reader_has_a_default() {
    let e = |symbols: &str, default: &str| {
        record(&format!(
            r#"{{"name":"e","type":{{"type":"enum","name":"E","symbols":[{symbols}]{default}}}}}"#
        ))
    };
    let ab = e(r#""A","B""#, "");
    let abc = e(r#""A","B","C""#, "");
    let ab_default = e(r#""A","B""#, r#","default":"A""#);
    let xy = e(r#""X","Y""#, "");
    assert_eq!(reads(&ab, &abc), Ok(()), "reader has more symbols");
    let err = reads(&abc, &ab).unwrap_err();
    assert!(
        err.contains("field 'e'"),
        "a partial result is incompatible: {err}"
    );
    assert_eq!(
        reads(&abc, &ab_default),
        Ok(()),
        "the reader's default absorbs C"
    );
    assert!(reads(&ab, &xy)
        .unwrap_err()
        .contains("none of the writer's symbols"));
}

#[test]
fn unions_resolve_branch_by_branch() {
    let nullable_int = record(r#"{"name":"a","type":["null","int"],"default":null}"#);
    let nullable_long = record(r#"{"name":"a","type":["null","long"],"default":null}"#);
    let plain_int = record(r#"{"name":"a","type":"int"}"#);
    let int_or_string = record(r#"{"name":"a","type":["int","string"]}"#);
    assert_eq!(reads(&nullable_int, &nullable_long), Ok(()));
    assert_eq!(
        reads(&plain_int, &nullable_int),
        Ok(()),
        "a value becomes a union branch"
    );
    // Some writer branches (null) have no reader branch: partial, so incompatible.
    assert!(reads(&nullable_int, &plain_int).is_err());
    assert!(reads(&int_or_string, &plain_int).is_err());
    assert_eq!(reads(&plain_int, &int_or_string), Ok(()));
}

#[test]
fn nested_records_are_checked_in_depth_and_the_message_names_the_path() {
    let inner = |fields: &str| {
        record(&format!(
            r#"{{"name":"outer","type":["null",{{"type":"record","name":"Inner","fields":[{fields}]}}],"default":null}}"#
        ))
    };
    let v1 = inner(r#"{"name":"x","type":"int"}"#);
    let v2_ok =
        inner(r#"{"name":"x","type":"long"},{"name":"y","type":["null","string"],"default":null}"#);
    let v2_bad = inner(r#"{"name":"x","type":"int"},{"name":"y","type":"string"}"#);
    assert_eq!(reads(&v1, &v2_ok), Ok(()));
    let err = reads(&v1, &v2_bad).unwrap_err();
    assert!(
        err.contains("field 'outer.y' is only in the reader"),
        "{err}"
    );
}

#[test]
fn decimals_resolve_only_with_equal_precision_and_scale() {
    let d = |p, s| {
        record(&format!(
            r#"{{"name":"d","type":{{"type":"bytes","logicalType":"decimal","precision":{p},"scale":{s}}}}}"#
        ))
    };
    assert_eq!(reads(&d(10, 2), &d(10, 2)), Ok(()));
    let err = reads(&d(10, 2), &d(12, 2)).unwrap_err();
    assert!(
        err.contains("decimal changed from (10,2) to (12,2)"),
        "{err}"
    );
}

#[test]
fn levels_choose_the_direction() {
    let old = avro(&record(r#"{"name":"a","type":"int"}"#));
    // Added with a default: both directions work.
    let added = avro(&record(
        r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#,
    ));
    // Removed a field without a default: new readers are fine, old readers miss it.
    let removed = avro(&record(r#"{"name":"z","type":"int","default":1}"#));
    let widened = avro(&record(r#"{"name":"a","type":"long"}"#));
    for level in [Level::Backward, Level::Forward, Level::Full] {
        assert!(check(level, &added, &old, 1).is_empty(), "{level:?}");
    }
    assert!(check(Level::Backward, &removed, &old, 1).is_empty());
    let problems = check(Level::Forward, &removed, &old, 1);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("version 1 cannot read data written with the new schema"),
        "{problems:?}"
    );
    assert!(check(Level::Backward, &widened, &old, 1).is_empty());
    let problems = check(Level::Full, &widened, &old, 1);
    assert_eq!(
        problems.len(),
        1,
        "long cannot be read as int: {problems:?}"
    );
    assert!(check(Level::None, &widened, &old, 1).is_empty());
}

fn register(registry: &Registry, subject: &str, text: &str) -> Result<u32, String> {
    registry
        .register(
            subject,
            &NewSchema {
                schema_type: SchemaType::Avro,
                text,
                id: None,
                version: None,
            },
        )
        .map_err(|e| format!("{} {}", e.code, e.message))
}

#[test]
fn transitive_levels_check_every_live_version() {
    let registry = Registry::open(MemoryStore::default()).unwrap();
    let v1 = record(r#"{"name":"a","type":"int"}"#);
    // v2 drops a (fine backward), v3 adds a back as string without default.
    let v2 = record(r#"{"name":"b","type":"int","default":0}"#);
    let v3 = record(
        r#"{"name":"b","type":"int","default":0},{"name":"a","type":"string","default":"x"}"#,
    );
    registry
        .set_compatibility(Some("s"), Level::BackwardTransitive)
        .unwrap();
    register(&registry, "s", &v1).unwrap();
    register(&registry, "s", &v2).unwrap();
    let err = register(&registry, "s", &v3).unwrap_err();
    assert!(err.starts_with("409 "), "{err}");
    assert!(
        err.contains("version 1"),
        "checked against version 1 too: {err}"
    );
    // Plain BACKWARD only looks at the latest.
    registry
        .set_compatibility(Some("s"), Level::Backward)
        .unwrap();
    assert_eq!(register(&registry, "s", &v3), Ok(3));
}

#[test]
fn schemas_differing_only_in_a_default_are_different_registrations() {
    let registry = Registry::open(MemoryStore::default()).unwrap();
    let a = record(r#"{"name":"a","type":"int","default":1}"#);
    let b = record(r#"{"name":"a","type":"int","default":2}"#);
    let id_a = register(&registry, "s", &a).unwrap();
    let id_b = register(&registry, "s", &b).unwrap();
    assert_ne!(id_a, id_b);
    assert_eq!(registry.versions("s", false).unwrap(), vec![1, 2]);
    // Whitespace alone is not a difference.
    let spaced = a.replace(',', " , ");
    assert_eq!(register(&registry, "s", &spaced), Ok(id_a));
}

#[test]
fn json_schema_rules() {
    let reads = |w: &str, r: &str| can_read(&json(w), &json(r)).map_err(|e| e.0);
    let obj = |props: &str, required: &str, extra: &str| {
        format!(r#"{{"type":"object","properties":{{{props}}},"required":[{required}]{extra}}}"#)
    };
    let v1 = obj(r#""a":{"type":"integer"}"#, r#""a""#, "");
    // integer widens to number for readers, not back.
    let wider = obj(r#""a":{"type":"number"}"#, r#""a""#, "");
    assert_eq!(reads(&v1, &wider), Ok(()));
    assert!(reads(&wider, &v1).unwrap_err().contains("type number"));
    // A reader may not require what writers could omit.
    let requires_b = obj(
        r#""a":{"type":"integer"},"b":{"type":"string"}"#,
        r#""a","b""#,
        "",
    );
    assert!(reads(&v1, &requires_b)
        .unwrap_err()
        .contains("property 'b' is required by the reader"));
    // A property added to an open model may meet anything old writers put there.
    let adds_b = obj(
        r#""a":{"type":"integer"},"b":{"type":"string"}"#,
        r#""a""#,
        "",
    );
    assert!(reads(&v1, &adds_b)
        .unwrap_err()
        .contains("open content model"));
    let closed_v1 = obj(
        r#""a":{"type":"integer"}"#,
        r#""a""#,
        r#","additionalProperties":false"#,
    );
    assert_eq!(reads(&closed_v1, &adds_b), Ok(()));
    // Removing a property from a closed reader model.
    let closed_empty = obj("", "", r#","additionalProperties":false"#);
    assert!(reads(&v1, &closed_empty)
        .unwrap_err()
        .contains("removed from a closed content model"));
    // Enums may grow, not shrink.
    let e = |values: &str| format!(r#"{{"enum":[{values}]}}"#);
    assert_eq!(reads(&e(r#""x""#), &e(r#""x","y""#)), Ok(()));
    assert!(reads(&e(r#""x","y""#), &e(r#""x""#))
        .unwrap_err()
        .contains("enum value \"y\""));
    // Nested paths are named.
    let nested = |t: &str| {
        format!(
            r#"{{"type":"object","properties":{{"o":{{"type":"object","properties":{{"x":{{"type":"{t}"}}}}}}}}}}"#
        )
    };
    let err = reads(&nested("string"), &nested("integer")).unwrap_err();
    assert!(err.contains("#/properties/o/properties/x"), "{err}");
    assert!(parse_schema(SchemaType::Json, "[1]").is_err());
}
