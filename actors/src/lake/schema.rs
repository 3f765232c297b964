//! The Iceberg table schemas, derived from the v2 Avro schemas (schemas/*.avsc):
//! one definition, so a field added there reaches the tables without a second
//! list to keep in step.

use std::sync::Arc;

use iceberg::spec::{
    ListType, MapType, NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder, Transform,
    Type, UnboundPartitionSpec,
};
use serde_json::Value;

use super::LakeError;

/// The Iceberg schema for one v2 record, from its Avro schema text.
///
/// Mapping: string and enum → string; `long` with `timestamp-micros` →
/// timestamptz (µs, UTC); `bytes` decimal → decimal(p, s); array of strings →
/// list<string>; map → map<string, string>; a union with null → optional.
/// Top-level fields keep their Avro order and take ids 1..n; nested ids follow.
pub fn iceberg_schema(avsc: &str) -> Result<Schema, LakeError> {
    let record: Value = serde_json::from_str(avsc).map_err(|e| LakeError::Schema(format!("avro schema: {e}")))?;
    let fields = record
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| LakeError::Schema("avro schema has no fields".into()))?;
    let mut next_nested = fields.len() as i32 + 1;
    let mut out = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        let name = field
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| LakeError::Schema(format!("avro field {i} has no name")))?;
        let (ty, required) = field_type(name, &field["type"], &mut next_nested)?;
        out.push(Arc::new(NestedField::new(i as i32 + 1, name, ty, required)));
    }
    Schema::builder()
        .with_schema_id(0)
        .with_fields(out)
        .build()
        .map_err(|e| LakeError::Schema(format!("iceberg schema: {e}")))
}

fn field_type(name: &str, avro: &Value, next_id: &mut i32) -> Result<(Type, bool), LakeError> {
    if let Value::Array(branches) = avro {
        let non_null: Vec<&Value> = branches.iter().filter(|b| b.as_str() != Some("null")).collect();
        if non_null.len() != 1 || non_null.len() == branches.len() {
            return Err(LakeError::Schema(format!("field {name}: only [\"null\", T] unions map to Iceberg")));
        }
        let (ty, _) = field_type(name, non_null[0], next_id)?;
        return Ok((ty, false));
    }
    let unsupported = || LakeError::Schema(format!("field {name}: Avro type {avro} has no Iceberg mapping here"));
    let prim = |p: PrimitiveType| Ok((Type::Primitive(p), true));
    match avro {
        Value::String(s) => match s.as_str() {
            "string" => prim(PrimitiveType::String),
            "long" => prim(PrimitiveType::Long),
            "int" => prim(PrimitiveType::Int),
            "boolean" => prim(PrimitiveType::Boolean),
            "double" => prim(PrimitiveType::Double),
            _ => Err(unsupported()),
        },
        Value::Object(o) => {
            let logical = o.get("logicalType").and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), logical) {
                (Some("enum"), _) => prim(PrimitiveType::String),
                (Some("long"), Some("timestamp-micros")) => prim(PrimitiveType::Timestamptz),
                (Some("bytes"), Some("decimal")) => {
                    let precision = o.get("precision").and_then(Value::as_u64).ok_or_else(unsupported)? as u32;
                    let scale = o.get("scale").and_then(Value::as_u64).unwrap_or(0) as u32;
                    prim(PrimitiveType::Decimal { precision, scale })
                }
                (Some("array"), _) if o.get("items").and_then(Value::as_str) == Some("string") => {
                    let id = take(next_id);
                    let element = NestedField::list_element(id, Type::Primitive(PrimitiveType::String), false);
                    Ok((Type::List(ListType::new(Arc::new(element))), true))
                }
                (Some("map"), _) if o.get("values").and_then(Value::as_str) == Some("string") => {
                    let (k, v) = (take(next_id), take(next_id));
                    let key = NestedField::map_key_element(k, Type::Primitive(PrimitiveType::String));
                    let value = NestedField::map_value_element(v, Type::Primitive(PrimitiveType::String), false);
                    Ok((Type::Map(MapType::new(Arc::new(key), Arc::new(value))), true))
                }
                _ => Err(unsupported()),
            }
        }
        _ => Err(unsupported()),
    }
}

fn take(next: &mut i32) -> i32 {
    let id = *next;
    *next += 1;
    id
}

/// `day(timestamp)`: one partition per UTC day. Symbols are not partitioned
/// (hundreds of symbols × frequent commits would mean many tiny files); rows
/// are sorted by symbol within each file instead, so Parquet statistics prune.
pub fn partition_spec(schema: &Schema) -> Result<UnboundPartitionSpec, LakeError> {
    day_partitions(schema, "timestamp", "timestamp_day")
}

/// One partition per UTC day of the time column `column`, named `name`.
pub fn day_partitions(schema: &Schema, column: &str, name: &str) -> Result<UnboundPartitionSpec, LakeError> {
    let ts = field_id(schema, column)?;
    UnboundPartitionSpec::builder()
        .add_partition_field(ts, name, Transform::Day)
        .map(|b| b.build())
        .map_err(|e| LakeError::Schema(format!("partition spec: {e}")))
}

/// The order rows are written in: (symbol, timestamp).
pub fn sort_order(schema: &Schema) -> Result<SortOrder, LakeError> {
    symbol_then(schema, "timestamp")
}

/// Rows sorted by symbol, then by the time column `column`.
pub fn symbol_then(schema: &Schema, column: &str) -> Result<SortOrder, LakeError> {
    let field = |id| SortField {
        source_id: id,
        transform: Transform::Identity,
        direction: SortDirection::Ascending,
        null_order: NullOrder::First,
    };
    SortOrder::builder()
        .with_order_id(1)
        .with_sort_field(field(field_id(schema, "symbol")?))
        .with_sort_field(field(field_id(schema, column)?))
        .build(schema)
        .map_err(|e| LakeError::Schema(format!("sort order: {e}")))
}

fn field_id(schema: &Schema, name: &str) -> Result<i32, LakeError> {
    schema.field_by_name(name).map(|f| f.id).ok_or_else(|| LakeError::Schema(format!("schema has no field {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_name(t: &Type) -> String {
        match t {
            Type::List(l) => format!("list<{}>", type_name(&l.element_field.field_type)),
            Type::Map(m) => {
                format!("map<{}, {}>", type_name(&m.key_field.field_type), type_name(&m.value_field.field_type))
            }
            other => other.to_string(),
        }
    }

    fn describe(schema: &Schema) -> Vec<String> {
        schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| {
                format!("{} {} {}", f.name, type_name(&f.field_type), if f.required { "required" } else { "optional" })
            })
            .collect()
    }

    #[test]
    fn the_trade_table_schema_follows_the_avro_definition() {
        let schema = iceberg_schema(k2_core::schema::TRADE_V2_AVSC).unwrap();
        let got = describe(&schema);
        let want = [
            "message_id string required",
            "trade_id string required",
            "symbol string required",
            "exchange string required",
            "asset_class string required",
            "timestamp timestamptz required",
            "price decimal(18, 8) required",
            "quantity decimal(18, 8) required",
            "currency string required",
            "side string required",
            "trade_conditions list<string> required",
            "source_sequence long optional",
            "ingestion_timestamp timestamptz required",
            "platform_sequence long optional",
            "vendor_data map<string, string> optional",
            "is_sample_data boolean required",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn the_quote_table_schema_has_optional_sides() {
        let schema = iceberg_schema(k2_core::schema::QUOTE_V2_AVSC).unwrap();
        let got = describe(&schema);
        for side in ["bid_price", "bid_quantity", "ask_price", "ask_quantity"] {
            assert!(got.contains(&format!("{side} decimal(18, 8) optional")), "{got:?}");
        }
        assert_eq!(got.len(), 16);
    }

    #[test]
    fn unions_other_than_with_null_are_refused() {
        let avsc = r#"{"type":"record","name":"X","fields":[{"name":"a","type":["string","long"]}]}"#;
        let err = iceberg_schema(avsc).unwrap_err().to_string();
        assert!(err.contains("field a"), "{err}");
    }
}
