//! `/openapi.json`: the HTTP contract. The paths, parameters and answers
//! are written out in `openapi.json` beside this file (the contract is a
//! document, read and reviewed as one); what would otherwise be a second
//! list to keep in step is filled in here at start: the row schemas of
//! trades and quotes from the v2 Avro schemas (schemas/*.avsc), the time
//! zones `tz` accepts, and the version. CI runs schemathesis against the
//! result with every check, so the document and the server cannot drift.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

const DOCUMENT: &str = include_str!("openapi.json");

/// The finished document, serialised once.
pub fn document() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_vec(&build()).unwrap_or_default())
}

/// The document with the parts derived from the schemas and the build.
pub fn build() -> Value {
    // Both texts are compiled in and checked by the tests below.
    let mut doc: Value = serde_json::from_str(DOCUMENT).unwrap_or_else(|_| json!({}));
    doc["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    let schemas = &mut doc["components"]["schemas"];
    schemas["Trade"] = row_schema(k2_core::schema::TRADE_V2_AVSC, "A trade, as schemas/trade_v2.avsc defines it");
    schemas["Quote"] = row_schema(k2_core::schema::QUOTE_V2_AVSC, "A quote, as schemas/quote_v2.avsc defines it");
    let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    schemas["TimeZone"]["enum"] = json!(zones);
    doc
}

/// The JSON Schema of one row of a table whose record is `avsc`, as the
/// API writes rows: every column present, null where the Avro field is a
/// null union; decimals as exact strings, timestamps as RFC 3339 strings.
fn row_schema(avsc: &str, description: &str) -> Value {
    let record: Value = serde_json::from_str(avsc).unwrap_or_default();
    let fields = record["fields"].as_array().cloned().unwrap_or_default();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in &fields {
        let Some(name) = field["name"].as_str() else { continue };
        let mut schema = value_schema(&field["type"]);
        if let Some(doc) = field["doc"].as_str() {
            schema["description"] = doc.into();
        }
        properties.insert(name.to_owned(), schema);
        required.push(name.to_owned());
    }
    json!({"type": "object", "description": description, "required": required, "properties": properties})
}

fn value_schema(avro: &Value) -> Value {
    match avro {
        Value::Array(branches) => {
            let mut inner = branches.iter().find(|b| b.as_str() != Some("null")).map_or(json!({}), value_schema);
            inner["nullable"] = true.into();
            inner
        }
        Value::String(s) => match s.as_str() {
            "string" => json!({"type": "string"}),
            "long" | "int" => json!({"type": "integer"}),
            "boolean" => json!({"type": "boolean"}),
            "double" | "float" => json!({"type": "number"}),
            _ => json!({}),
        },
        Value::Object(o) => match (o.get("type").and_then(Value::as_str), o.get("logicalType").and_then(Value::as_str))
        {
            (Some("enum"), _) => json!({"type": "string", "enum": o.get("symbols").cloned().unwrap_or_default()}),
            (Some("long"), Some("timestamp-micros")) => json!({"type": "string", "format": "date-time"}),
            (Some("bytes"), Some("decimal")) => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}),
            (Some("array"), _) => {
                json!({"type": "array", "items": value_schema(o.get("items").unwrap_or(&Value::Null))})
            }
            (Some("map"), _) => {
                json!({"type": "object", "additionalProperties": value_schema(o.get("values").unwrap_or(&Value::Null))})
            }
            (Some(other), _) => value_schema(&Value::String(other.to_owned())),
            _ => json!({}),
        },
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value` names something the document holds.
    fn dangling(doc: &Value, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    let found = r
                        .strip_prefix("#/")
                        .is_some_and(|path| path.split('/').try_fold(doc, |node, part| node.get(part)).is_some());
                    if !found {
                        out.push(r.to_owned());
                    }
                }
                o.values().for_each(|v| dangling(doc, v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| dangling(doc, v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_parses_and_every_reference_resolves() {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        let mut missing = Vec::new();
        dangling(&doc, &doc, &mut missing);
        assert!(missing.is_empty(), "dangling references: {missing:?}");
    }

    #[test]
    fn row_schemas_follow_the_avro_schemas() {
        let doc = build();
        let trade = &doc["components"]["schemas"]["Trade"];
        let avsc: Value = serde_json::from_str(k2_core::schema::TRADE_V2_AVSC).unwrap();
        let fields: Vec<&str> =
            avsc["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        let required: Vec<&str> = trade["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(required, fields);
        assert_eq!(trade["properties"]["price"]["type"], "string", "decimals are exact strings");
        assert_eq!(trade["properties"]["timestamp"]["format"], "date-time");
        let quote = &doc["components"]["schemas"]["Quote"];
        assert_eq!(quote["properties"]["bid_price"]["nullable"], true, "an empty side is null");
        let zones = doc["components"]["schemas"]["TimeZone"]["enum"].as_array().unwrap();
        assert!(zones.iter().any(|z| z == "Australia/Sydney") && zones.len() > 300);
    }
}
