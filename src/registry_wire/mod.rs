//! What the Confluent schema registry's wire protocol carries: request
//! bodies, subject names, schema ids, and the compatibility rules a new
//! schema is held to. Pure functions of bytes and text, so they can be
//! tested and fuzzed without a database or a server; the registry's storage
//! and HTTP routes are in the actors crate (`registry/`).

mod compatibility;
mod guard;

use apache_avro::Schema;
use serde::Deserialize;
use thiserror::Error;

pub use compatibility::{Compatibility, Incompatibility};

/// A request refused for what it says, before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// A schema id that is not a number names no schema.
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "Invalid compatibility level {0:?}: one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
    )]
    InvalidCompatibility(String),
    #[error("Only AVRO schemas are supported, not {0}")]
    UnsupportedType(String),
    #[error("Invalid subject {0:?}: 1 to 255 bytes of letters, digits and . _ - + :")]
    InvalidSubject(String),
}

impl RequestError {
    /// Confluent's error code (the HTTP status is its first three digits).
    pub fn code(&self) -> u32 {
        match self {
            RequestError::SchemaNotFound(_) => 40403,
            RequestError::InvalidSchema(_) | RequestError::UnsupportedType(_) => 42201,
            RequestError::InvalidCompatibility(_) => 42203,
            // K2's own code, in Confluent's shape.
            RequestError::InvalidSubject(_) => 42208,
        }
    }
}

/// The body of a register, lookup or compatibility request
/// (`{"schema": "...", "schemaType": "AVRO"}`): its schema text.
pub fn schema_body(bytes: &[u8]) -> Result<String, RequestError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SchemaBody {
        schema: String,
        schema_type: Option<String>,
        #[serde(default)]
        references: Vec<serde_json::Value>,
    }
    let body: SchemaBody =
        serde_json::from_slice(bytes).map_err(|e| RequestError::InvalidSchema(format!("request body: {e}")))?;
    match body.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => return Err(RequestError::UnsupportedType(other.to_owned())),
    }
    if !body.references.is_empty() {
        return Err(RequestError::InvalidSchema("schema references are not supported".into()));
    }
    Ok(body.schema)
}

/// The body of a config write (`{"compatibility": "FULL"}`).
pub fn config_body(bytes: &[u8]) -> Result<Compatibility, RequestError> {
    #[derive(Deserialize)]
    struct ConfigBody {
        compatibility: String,
    }
    let body: ConfigBody =
        serde_json::from_slice(bytes).map_err(|e| RequestError::InvalidCompatibility(format!("request body: {e}")))?;
    Compatibility::parse(&body.compatibility)
}

/// A schema id from a path (`/schemas/ids/{id}`).
pub fn schema_id(text: &str) -> Result<i64, RequestError> {
    text.parse().map_err(|_| RequestError::SchemaNotFound(text.to_owned()))
}

/// Subject names are bounded in length and character set (those of topic
/// names, plus `:` for Confluent's contexts and `+`), so none can carry
/// control characters or path tricks into logs, URLs or the catalog. `%`
/// is refused too: in a URL path it reads as an escape, so a name holding
/// one means different things to different clients. The registry checks
/// names on reads too: one no subject can have is a 422, not a 404.
pub fn check_subject(subject: &str) -> Result<(), RequestError> {
    let ok = (1..=255).contains(&subject.len())
        && subject.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+:".contains(&b));
    if ok { Ok(()) } else { Err(RequestError::InvalidSubject(subject.chars().take(300).collect())) }
}

/// A schema's text as apache-avro reads it, once [`guard`] has refused what
/// apache-avro would panic on.
pub fn parse_schema(text: &str) -> Result<Schema, RequestError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| RequestError::InvalidSchema(format!("not JSON: {e}")))?;
    avro_json(&json).map_err(RequestError::InvalidSchema)
}

/// A schema's JSON as apache-avro reads it, [`guard`]ed first.
fn avro_json(json: &serde_json::Value) -> Result<Schema, String> {
    guard::check(json)?;
    Schema::parse(json).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_as_confluent_clients_send_them() {
        assert_eq!(schema_body(br#"{"schema":"\"string\""}"#).unwrap(), r#""string""#);
        assert_eq!(
            schema_body(br#"{"schema":"\"string\"","schemaType":"AVRO","references":[]}"#).unwrap(),
            r#""string""#
        );
        assert_eq!(schema_body(br#"{"schema":"{}","schemaType":"PROTOBUF"}"#).unwrap_err().code(), 42201);
        let refs = schema_body(br#"{"schema":"\"string\"","references":[{"name":"x"}]}"#).unwrap_err();
        assert_eq!(refs, RequestError::InvalidSchema("schema references are not supported".into()));
        assert!(matches!(schema_body(b"{"), Err(RequestError::InvalidSchema(_))));
        assert_eq!(config_body(br#"{"compatibility":"FULL_TRANSITIVE"}"#).unwrap(), Compatibility::FullTransitive);
        assert_eq!(config_body(br#"{"compatibility":"full"}"#).unwrap_err().code(), 42203);
        assert_eq!(schema_id("12").unwrap(), 12);
        assert_eq!(schema_id("x1").unwrap_err().code(), 40403);
    }

    /// Found by the registry_body fuzz target: apache-avro 0.21 panicked on
    /// a record name that is not an Avro name instead of refusing it.
    #[test]
    fn a_schema_with_a_bad_name_is_refused_not_a_panic() {
        let body = br#"{"schema":"{\"type\":\"record\",\"name\":\"`List\",\"namespace\":\"a.b\",\"fields\":[{\"name\":\"v\",\"default\":null}]}"}"#;
        let schema = schema_body(body).unwrap();
        let e = parse_schema(&schema).unwrap_err();
        assert_eq!(e, RequestError::InvalidSchema("name \"`List\" is not an Avro name".into()));
        let e = Compatibility::Full.check(crate::schema::TRADE_V2_AVSC, &schema).unwrap_err();
        assert!(matches!(e, Incompatibility::Unreadable(_)), "{e}");
    }

    /// Found by the registry_body fuzz target: a decimal apache-avro does not
    /// accept (precision -0, a float to JSON) stayed an attribute of its fixed
    /// type, and the canonical form every registration computes panicked.
    #[test]
    fn a_precision_that_is_no_integer_is_refused_not_a_panic() {
        let schema = r#"{"type":"fixed","name":"F","size":16,"logicalType":"decimal","precision":-0,"scale":2}"#;
        let e = parse_schema(schema).map(|s| s.canonical_form()).unwrap_err();
        assert_eq!(e, RequestError::InvalidSchema("precision -0.0 is not an integer".into()));
    }

    /// Found by the registry_body fuzz target: a field carrying
    /// `"fields": [2]` kept it as an attribute, and the canonical form
    /// panicked on the number.
    #[test]
    fn a_bare_number_where_the_canonical_form_wants_a_schema_is_refused_not_a_panic() {
        let schema = r#"{"type":"record","name":"R","fields":[{"name":"f","type":"string","fields":[2]}]}"#;
        let e = parse_schema(schema).map(|s| s.canonical_form()).unwrap_err();
        assert_eq!(e, RequestError::InvalidSchema("2 stands where a schema or a name is expected".into()));
    }

    #[test]
    fn subjects_are_bounded_in_length_and_characters() {
        for bad in ["", "a/../b", "with space", "ctl\u{7}", &"x".repeat(256)] {
            assert_eq!(check_subject(bad).unwrap_err().code(), 42208, "{bad:?}");
        }
        for good in ["market.crypto.trades.binance-value", ":.ctx:a_b-c+1", &"x".repeat(255)] {
            assert!(check_subject(good).is_ok(), "{good:?}");
        }
    }
}
