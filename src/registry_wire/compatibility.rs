//! Compatibility levels, and the check a new version of a subject's schema
//! must pass against earlier ones.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::RequestError;

/// Which earlier versions a new schema must be compatible with, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

/// Why a new schema may not follow an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Incompatibility {
    /// One of the two is not a schema once its decimals are made plain.
    #[error("{0}")]
    Unreadable(String),
    #[error("decimal {path} changes from {before:?} to {after:?} (precision, scale)")]
    DecimalChanged { path: String, before: (u64, u64), after: (u64, u64) },
    #[error("the new schema cannot read data written with an earlier one: {0}")]
    NewCannotRead(String),
    #[error("an earlier schema cannot read data written with the new one: {0}")]
    OldCannotRead(String),
}

impl Compatibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn parse(text: &str) -> Result<Self, RequestError> {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .map_err(|_| RequestError::InvalidCompatibility(text.to_owned()))
    }

    /// Whether every earlier version is checked, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive
        )
    }

    /// Whether `new` may follow `old` under this level.
    pub fn check(self, old: &str, new: &str) -> Result<(), Incompatibility> {
        if self == Compatibility::None {
            return Ok(());
        }
        // apache-avro's checker does not know the decimal logical type (it
        // finds a decimal field incompatible with itself), so it checks the
        // physical schemas and the decimals' precision and scale are compared
        // here, field by field.
        let (old_physical, old_decimals) = physical(old)?;
        let (new_physical, new_decimals) = physical(new)?;
        for (path, after) in &new_decimals {
            if let Some(before) = old_decimals.get(path)
                && before != after
            {
                return Err(Incompatibility::DecimalChanged { path: path.clone(), before: *before, after: *after });
            }
        }
        let backward = || {
            SchemaCompatibility::can_read(&old_physical, &new_physical)
                .map_err(|e| Incompatibility::NewCannotRead(e.to_string()))
        };
        let forward = || {
            SchemaCompatibility::can_read(&new_physical, &old_physical)
                .map_err(|e| Incompatibility::OldCannotRead(e.to_string()))
        };
        match self {
            Compatibility::None => Ok(()),
            Compatibility::Backward | Compatibility::BackwardTransitive => backward(),
            Compatibility::Forward | Compatibility::ForwardTransitive => forward(),
            Compatibility::Full | Compatibility::FullTransitive => backward().and_then(|()| forward()),
        }
    }
}

/// Each decimal's (precision, scale), by field path.
type Decimals = BTreeMap<String, (u64, u64)>;

/// The schema with decimal logical types replaced by their underlying type,
/// and its decimals.
fn physical(schema: &str) -> Result<(Schema, Decimals), Incompatibility> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Decimals) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(o) if o.get("logicalType").and_then(Value::as_str) == Some("decimal") => {
                let p = o.get("precision").and_then(Value::as_u64).unwrap_or(0);
                let s = o.get("scale").and_then(Value::as_u64).unwrap_or(0);
                out.insert(path.to_owned(), (p, s));
                let mut plain = o.clone();
                for k in ["logicalType", "precision", "scale"] {
                    plain.remove(k);
                }
                Value::Object(plain)
            }
            Value::Object(o) => {
                let mut copy = serde_json::Map::new();
                for (k, child) in o {
                    let next = match (k.as_str(), o.get("name").and_then(Value::as_str)) {
                        ("type", Some(name)) => format!("{path}.{name}"),
                        _ => path.to_owned(),
                    };
                    copy.insert(k.clone(), walk(child, &next, out));
                }
                Value::Object(copy)
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, path, out)).collect()),
            other => other.clone(),
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(schema).map_err(|e| Incompatibility::Unreadable(e.to_string()))?;
    let mut decimals = Decimals::new();
    let plain = walk(&json, "", &mut decimals);
    Ok((super::avro_json(&plain).map_err(Incompatibility::Unreadable)?, decimals))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_price(precision: u32, scale: u32, extra: &str) -> String {
        format!(
            r#"{{"type":"record","name":"T","fields":[{{"name":"price","type":{{"type":"bytes","logicalType":"decimal","precision":{precision},"scale":{scale}}}}}{extra}]}}"#
        )
    }

    #[test]
    fn decimals_are_compared_by_precision_and_scale() {
        let base = with_price(18, 8, "");
        assert!(Compatibility::Full.check(&base, &base).is_ok());
        let err = Compatibility::Backward.check(&base, &with_price(18, 6, "")).unwrap_err();
        assert_eq!(
            err,
            Incompatibility::DecimalChanged { path: ".price".into(), before: (18, 8), after: (18, 6) },
            "{err}"
        );
        let added = with_price(18, 8, r#",{"name":"venue","type":["null","string"],"default":null}"#);
        assert!(Compatibility::Full.check(&base, &added).is_ok());
        let required = with_price(18, 8, r#",{"name":"venue","type":"string"}"#);
        assert!(matches!(Compatibility::Backward.check(&base, &required), Err(Incompatibility::NewCannotRead(_))));
        assert!(Compatibility::Forward.check(&base, &required).is_ok());
        assert!(Compatibility::None.check(&base, &with_price(10, 2, "")).is_ok());
    }

    #[test]
    fn every_level_reads_back_from_its_name() {
        for level in [
            Compatibility::None,
            Compatibility::Backward,
            Compatibility::BackwardTransitive,
            Compatibility::Forward,
            Compatibility::ForwardTransitive,
            Compatibility::Full,
            Compatibility::FullTransitive,
        ] {
            assert_eq!(Compatibility::parse(level.as_str()).unwrap(), level);
        }
    }
}
