//! A schema's JSON checked, before apache-avro reads it, for what apache-avro
//! 0.21 panics on where it should return an error (a panic on a server
//! thread would drop the request's connection). Both were found by the
//! registry_body fuzz target:
//!
//! - a named type, a type reference or an alias that is not an Avro name
//!   (it unwraps its own name check);
//! - in the parts of a schema its Parsing Canonical Form keeps (`name`,
//!   `type`, `fields`, `symbols`, `items`, `values`, `order`, and `size`,
//!   `precision`, `scale` as integers), a number, boolean or null, or a
//!   `size`, `precision` or `scale` that is not an integer within 64 bits
//!   (`-0`, which JSON parsers read as a float). apache-avro keeps what it
//!   does not understand as attributes (a decimal it refuses, `"fields"` on
//!   a field), and its canonical form then unwraps them.
//!
//! Names are looked for only where the schema holds them (types, fields,
//! items, values, union branches); defaults, docs and other attributes are
//! data and may hold anything.

use serde_json::{Map, Value};

/// `[A-Za-z_][A-Za-z0-9_]*`, the specification's name.
fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Names joined by dots, or nothing (the null namespace).
fn is_namespace(s: &str) -> bool {
    s.is_empty() || s.split('.').all(is_name)
}

/// A name, optionally after a namespace and a dot.
fn is_fullname(s: &str) -> bool {
    match s.rsplit_once('.') {
        Some((namespace, name)) => is_namespace(namespace) && is_name(name),
        None => is_name(s),
    }
}

/// Refuses the first name the specification does not allow, or value the
/// canonical form cannot take, in `schema`.
pub(super) fn check(schema: &Value) -> Result<(), String> {
    names(schema)?;
    canonical(schema)
}

/// The keys apache-avro's canonical form keeps and reads as schemas.
const CANONICAL_KEYS: [&str; 7] = ["name", "type", "fields", "symbols", "items", "values", "order"];
/// The keys it keeps and reads as integers.
const INTEGER_KEYS: [&str; 3] = ["size", "precision", "scale"];

/// What the canonical form walks: strings, and arrays and objects of them;
/// in objects only the keys it keeps.
fn canonical(v: &Value) -> Result<(), String> {
    match v {
        Value::String(_) => Ok(()),
        Value::Array(items) => items.iter().try_for_each(canonical),
        Value::Object(o) => o.iter().try_for_each(|(key, v)| {
            if CANONICAL_KEYS.contains(&key.as_str()) {
                canonical(v)
            } else if INTEGER_KEYS.contains(&key.as_str()) && v.as_i64().is_none() {
                Err(format!("{key} {v} is not an integer"))
            } else {
                Ok(())
            }
        }),
        other => Err(format!("{other} stands where a schema or a name is expected")),
    }
}

fn names(schema: &Value) -> Result<(), String> {
    match schema {
        // A primitive or a reference to a named type.
        Value::String(name) => fullname("type", name),
        // A union.
        Value::Array(branches) => branches.iter().try_for_each(names),
        Value::Object(o) => object(o),
        // Not a schema at all: apache-avro says so without panicking.
        _ => Ok(()),
    }
}

fn object(o: &Map<String, Value>) -> Result<(), String> {
    if let Some(name) = o.get("name").and_then(Value::as_str) {
        fullname("name", name)?;
    }
    if let Some(namespace) = o.get("namespace").and_then(Value::as_str)
        && !is_namespace(namespace)
    {
        return Err(format!("namespace {namespace:?} is not an Avro namespace"));
    }
    aliases(o)?;
    for key in ["type", "items", "values"] {
        if let Some(inner) = o.get(key) {
            names(inner)?;
        }
    }
    // apache-avro parses each field as a schema of its own (a field may even
    // be `"type": "enum"` with its symbols inline), so fields are walked
    // like any other schema object.
    match o.get("fields") {
        Some(Value::Array(fields)) => fields.iter().filter_map(Value::as_object).try_for_each(object),
        _ => Ok(()),
    }
}

fn aliases(o: &Map<String, Value>) -> Result<(), String> {
    match o.get("aliases") {
        Some(Value::Array(aliases)) => {
            aliases.iter().filter_map(Value::as_str).try_for_each(|alias| fullname("alias", alias))
        }
        _ => Ok(()),
    }
}

fn fullname(what: &str, name: &str) -> Result<(), String> {
    if is_fullname(name) { Ok(()) } else { Err(format!("{what} {name:?} is not an Avro name")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(schema: &str) -> Result<(), String> {
        check(&serde_json::from_str(schema).unwrap())
    }

    #[test]
    fn names_follow_the_specification() {
        for good in ["a", "_", "A_1", "com.k2.T", ".T", "string"] {
            assert!(is_fullname(good), "{good:?}");
        }
        for bad in ["", "1a", "a-b", "a.", "a..b", "`List", "ü", "a b"] {
            assert!(!is_fullname(bad), "{bad:?}");
        }
        assert!(is_namespace("") && is_namespace("a.b") && !is_namespace("a.") && !is_namespace(".a"));
    }

    #[test]
    fn bad_names_are_found_wherever_apache_avro_reads_them() {
        for bad in [
            r#"{"type":"record","name":"`List","fields":[]}"#,
            r#"{"type":"record","name":"R","namespace":"a-b","fields":[]}"#,
            r#"{"type":"enum","name":"E","symbols":["A"],"aliases":["x."]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"not-a-type"}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"array","name":"1","items":"int"}}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"enum","symbols":["A"],"aliases":["a b"]}]}"#,
            r#"["null",{"type":"map","values":{"type":"fixed","name":"F-","size":1}}]"#,
        ] {
            assert!(check_text(bad).is_err(), "{bad}");
        }
    }

    /// Found by the registry_body fuzz target: `"precision":-0` made the
    /// decimal an attribute of its fixed type, and apache-avro's canonical
    /// form panicked on it.
    #[test]
    fn sizes_precisions_and_scales_are_64_bit_integers() {
        let fixed = |attrs: &str| format!(r#"{{"type":"fixed","name":"F","size":16,"logicalType":"decimal",{attrs}}}"#);
        for bad in [
            r#""precision":-0"#,
            r#""precision":1.5,"scale":2"#,
            r#""precision":9,"scale":"2""#,
            r#""precision":9223372036854775808"#,
        ] {
            assert!(check_text(&fixed(bad)).is_err(), "{bad}");
        }
        assert_eq!(check_text(&fixed(r#""precision":38,"scale":2"#)), Ok(()));
        let field = r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","scale":0.5}]}"#;
        assert!(check_text(field).is_err());
    }

    /// Found by the registry_body fuzz target: `"fields": [2]` on a field
    /// became an attribute of it, and the canonical form panicked on the 2.
    #[test]
    fn what_the_canonical_form_keeps_holds_no_bare_values() {
        for bad in [
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","fields":[2]}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","order":5}]}"#,
            r#"{"type":"array","items":"int","values":null}"#,
            r#"{"type":"enum","name":"E","symbols":["A",true]}"#,
        ] {
            assert!(check_text(bad).is_err(), "{bad}");
        }
        let ok = r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","order":"descending","default":2,"x":[null]}]}"#;
        assert_eq!(check_text(ok), Ok(()));
    }

    #[test]
    fn defaults_and_attributes_may_hold_any_text() {
        let schema = r#"{"type":"record","name":"R","doc":"a-b","x-meta":{"name":"a b"},"fields":[{"name":"f","type":{"type":"record","name":"In","fields":[{"name":"g","type":"string"}]},"default":{"g":"not a name"}}]}"#;
        assert_eq!(check_text(schema), Ok(()));
        assert_eq!(check_text(crate::schema::TRADE_V2_AVSC), Ok(()));
        assert_eq!(check_text(crate::schema::QUOTE_V2_AVSC), Ok(()));
    }
}
