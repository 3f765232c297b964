//! Registry state in SQLite. Schema ids are global: the same schema (by its
//! Avro Parsing Canonical Form) has one id under every subject, as in
//! Confluent's registry. Writes are serialised in process; the data
//! directory lock keeps other K2 processes out.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use thiserror::Error;
use tokio::sync::Mutex;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound { subject: String, version: i64 },
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level {0:?}: one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
    )]
    InvalidCompatibility(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {reason}")]
    Incompatible { subject: String, reason: String },
    #[error("Only AVRO schemas are supported, not {0}")]
    UnsupportedType(String),
    #[error("Invalid subject {0:?}: 1 to 255 bytes of letters, digits and . _ - + :")]
    InvalidSubject(String),
    #[error("The registry holds as many subjects as its limit allows; {0:?} would be one more")]
    TooManySubjects(String),
    #[error("registry storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// Subjects one registry holds at most: K2 needs a few per topic, and an
/// unbounded count would let any writer fill the catalog.
pub const MAX_SUBJECTS: i64 = 10_000;

/// Subject names are bounded in length and character set (those of topic
/// names, plus `:` for Confluent's contexts and `+`), so none can carry
/// control characters or path tricks into logs, URLs or the catalog. `%`
/// is refused too: in a URL path it reads as an escape, so a name holding
/// one means different things to different clients. Reads check too: a
/// name no subject can have is a 422, not a 404 or the global level.
fn check_subject(subject: &str) -> Result<(), RegistryError> {
    let ok = (1..=255).contains(&subject.len())
        && subject.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+:".contains(&b));
    if ok { Ok(()) } else { Err(RegistryError::InvalidSubject(subject.chars().take(300).collect())) }
}

impl RegistryError {
    /// Confluent's error code (the HTTP status is its first three digits).
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound { .. } => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) | RegistryError::UnsupportedType(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibility(_) => 42203,
            // K2's own codes, in Confluent's shape.
            RegistryError::InvalidSubject(_) => 42208,
            RegistryError::TooManySubjects(_) => 42209,
            RegistryError::Storage(_) => 50001,
        }
    }
}

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

    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .map_err(|_| RegistryError::InvalidCompatibility(text.to_owned()))
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive
        )
    }

    /// Whether `new` may follow `old` under this level.
    fn check(self, old: &str, new: &str) -> Result<(), String> {
        if self == Compatibility::None {
            return Ok(());
        }
        // apache-avro's checker does not know the decimal logical type (it
        // finds a decimal field incompatible with itself), so it checks the
        // physical schemas and the decimals' precision and scale are compared
        // here, field by field.
        let (old_physical, old_decimals) = physical(old)?;
        let (new_physical, new_decimals) = physical(new)?;
        for (path, annotation) in &new_decimals {
            if let Some(before) = old_decimals.get(path)
                && before != annotation
            {
                return Err(format!("decimal {path} changes from {before:?} to {annotation:?} (precision, scale)"));
            }
        }
        let backward = || {
            SchemaCompatibility::can_read(&old_physical, &new_physical)
                .map_err(|e| format!("the new schema cannot read data written with an earlier one: {e}"))
        };
        let forward = || {
            SchemaCompatibility::can_read(&new_physical, &old_physical)
                .map_err(|e| format!("an earlier schema cannot read data written with the new one: {e}"))
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
type Decimals = std::collections::BTreeMap<String, (u64, u64)>;

/// The schema with decimal logical types replaced by their underlying type,
/// and its decimals.
fn physical(schema: &str) -> Result<(Schema, Decimals), String> {
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
    let json: serde_json::Value = serde_json::from_str(schema).map_err(|e| e.to_string())?;
    let mut decimals = Decimals::new();
    let plain = walk(&json, "", &mut decimals);
    Ok((Schema::parse(&plain).map_err(|e| e.to_string())?, decimals))
}

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub subject: String,
    pub version: i64,
    pub id: i64,
    pub schema: String,
}

/// The registry over a SQLite database.
pub struct Registry {
    pool: SqlitePool,
    writes: Mutex<()>,
    max_subjects: i64,
}

/// The global compatibility level's key in the config table.
const GLOBAL: &str = "";

fn parse(schema: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))
}

impl Registry {
    /// Opens (creating) the registry tables in the SQLite database at `path`.
    pub async fn open(path: &Path) -> Result<Self, RegistryError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))?
            .create_if_missing(true)
            // The Iceberg catalog writes the same file: wait for its locks.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS k2_registry_schemas (id INTEGER PRIMARY KEY AUTOINCREMENT, canonical TEXT NOT NULL UNIQUE, schema TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS k2_registry_versions (subject TEXT NOT NULL, version INTEGER NOT NULL, schema_id INTEGER NOT NULL, PRIMARY KEY (subject, version))",
            "CREATE TABLE IF NOT EXISTS k2_registry_config (subject TEXT PRIMARY KEY, compatibility TEXT NOT NULL)",
        ] {
            sqlx::query(ddl).execute(&pool).await?;
        }
        Ok(Self { pool, writes: Mutex::new(()), max_subjects: MAX_SUBJECTS })
    }

    /// Another limit than [`MAX_SUBJECTS`] (tests reach it quickly).
    pub fn with_max_subjects(mut self, max: i64) -> Self {
        self.max_subjects = max;
        self
    }

    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let rows = sqlx::query("SELECT DISTINCT subject FROM k2_registry_versions ORDER BY subject")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    pub async fn versions(&self, subject: &str) -> Result<Vec<i64>, RegistryError> {
        check_subject(subject)?;
        let rows = sqlx::query("SELECT version FROM k2_registry_versions WHERE subject = ? ORDER BY version")
            .bind(subject)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }

    /// A version by number, or the latest for `"latest"` (or -1).
    pub async fn version(&self, subject: &str, version: &str) -> Result<Version, RegistryError> {
        check_subject(subject)?;
        let wanted = match version {
            "latest" | "-1" => None,
            v => match v.parse::<i64>() {
                Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Some(n),
                _ => return Err(RegistryError::InvalidVersion(v.to_owned())),
            },
        };
        let all = self.versions(subject).await?;
        let n = match wanted {
            Some(n) if all.contains(&n) => n,
            Some(n) => return Err(RegistryError::VersionNotFound { subject: subject.to_owned(), version: n }),
            None => *all.last().unwrap_or(&0),
        };
        let row = sqlx::query(
            "SELECT v.schema_id, s.schema FROM k2_registry_versions v JOIN k2_registry_schemas s ON s.id = v.schema_id WHERE v.subject = ? AND v.version = ?",
        )
        .bind(subject)
        .bind(n)
        .fetch_one(&self.pool)
        .await?;
        Ok(Version { subject: subject.to_owned(), version: n, id: row.get(0), schema: row.get(1) })
    }

    pub async fn schema_by_id(&self, id: i64) -> Result<String, RegistryError> {
        sqlx::query("SELECT schema FROM k2_registry_schemas WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// (subject, version) pairs that use schema `id`.
    pub async fn uses_of(&self, id: i64) -> Result<Vec<(String, i64)>, RegistryError> {
        self.schema_by_id(id).await?;
        let rows = sqlx::query(
            "SELECT subject, version FROM k2_registry_versions WHERE schema_id = ? ORDER BY subject, version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The version of `subject` holding `schema`, if registered.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Version, RegistryError> {
        check_subject(subject)?;
        let canonical = parse(schema)?.canonical_form();
        self.versions(subject).await?;
        let row = sqlx::query(
            "SELECT v.version, s.id, s.schema FROM k2_registry_versions v JOIN k2_registry_schemas s ON s.id = v.schema_id WHERE v.subject = ? AND s.canonical = ? ORDER BY v.version LIMIT 1",
        )
        .bind(subject)
        .bind(&canonical)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| RegistryError::SchemaNotFound("for this subject".into()))?;
        Ok(Version { subject: subject.to_owned(), version: row.get(0), id: row.get(1), schema: row.get(2) })
    }

    /// Registers `schema` under `subject` and returns its id. The same
    /// schema again returns the same id and adds no version; a schema the
    /// subject's compatibility level refuses is an error.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<i64, RegistryError> {
        check_subject(subject)?;
        let parsed = parse(schema)?;
        let canonical = parsed.canonical_form();
        let _write = self.writes.lock().await;
        if let Ok(existing) = self.lookup(subject, schema).await {
            return Ok(existing.id);
        }
        self.room_for(subject).await?;
        let level = self.compatibility(Some(subject)).await?;
        self.check(subject, schema, level).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT OR IGNORE INTO k2_registry_schemas (canonical, schema) VALUES (?, ?)")
            .bind(&canonical)
            .bind(schema)
            .execute(&mut *tx)
            .await?;
        let id: i64 = sqlx::query("SELECT id FROM k2_registry_schemas WHERE canonical = ?")
            .bind(&canonical)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 FROM k2_registry_versions WHERE subject = ?")
            .bind(subject)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        sqlx::query("INSERT INTO k2_registry_versions (subject, version, schema_id) VALUES (?, ?, ?)")
            .bind(subject)
            .bind(next)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Checks `new` against the subject's versions under `level` (the latest
    /// only, or all of them when transitive). A subject without versions
    /// accepts anything.
    async fn check(&self, subject: &str, new: &str, level: Compatibility) -> Result<(), RegistryError> {
        let versions = match self.versions(subject).await {
            Ok(v) => v,
            Err(RegistryError::SubjectNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let against: Vec<i64> =
            if level.transitive() { versions } else { versions.last().copied().into_iter().collect() };
        for v in against {
            let old = self.version(subject, &v.to_string()).await?.schema;
            level
                .check(&old, new)
                .map_err(|reason| RegistryError::Incompatible { subject: subject.to_owned(), reason })?;
        }
        Ok(())
    }

    /// Whether `schema` may be registered under `subject` after `version`.
    pub async fn is_compatible(&self, subject: &str, version: &str, schema: &str) -> Result<bool, RegistryError> {
        parse(schema)?;
        let old = self.version(subject, version).await?.schema;
        let level = self.compatibility(Some(subject)).await?;
        Ok(level.check(&old, schema).is_ok())
    }

    /// The level for `subject` (its own, else the global one), or the global
    /// level; BACKWARD unless set.
    pub async fn compatibility(&self, subject: Option<&str>) -> Result<Compatibility, RegistryError> {
        if let Some(subject) = subject {
            check_subject(subject)?;
        }
        for key in subject.into_iter().chain([GLOBAL]) {
            let row = sqlx::query("SELECT compatibility FROM k2_registry_config WHERE subject = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(r) = row {
                return Compatibility::parse(&r.get::<String, _>(0));
            }
        }
        Ok(Compatibility::Backward)
    }

    pub async fn set_compatibility(&self, subject: Option<&str>, level: Compatibility) -> Result<(), RegistryError> {
        if let Some(subject) = subject {
            check_subject(subject)?;
            let _write = self.writes.lock().await;
            self.room_for(subject).await?;
            return self.store_compatibility(Some(subject), level).await;
        }
        self.store_compatibility(None, level).await
    }

    /// Refuses a subject the registry does not know yet once it holds
    /// its limit (with versions or a level of their own). Call with
    /// the write lock held.
    async fn room_for(&self, subject: &str) -> Result<(), RegistryError> {
        let (known, count): (i64, i64) = sqlx::query_as(
            "WITH s AS (SELECT subject FROM k2_registry_versions UNION SELECT subject FROM k2_registry_config WHERE subject <> ?) \
             SELECT COALESCE(SUM(subject = ?), 0), COUNT(*) FROM s",
        )
        .bind(GLOBAL)
        .bind(subject)
        .fetch_one(&self.pool)
        .await?;
        if known == 0 && count >= self.max_subjects {
            return Err(RegistryError::TooManySubjects(subject.to_owned()));
        }
        Ok(())
    }

    async fn store_compatibility(&self, subject: Option<&str>, level: Compatibility) -> Result<(), RegistryError> {
        sqlx::query("INSERT INTO k2_registry_config (subject, compatibility) VALUES (?, ?) ON CONFLICT(subject) DO UPDATE SET compatibility = excluded.compatibility")
            .bind(subject.unwrap_or(GLOBAL))
            .bind(level.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_price(precision: u32, scale: u32, extra: &str) -> String {
        format!(
            r#"{{"type":"record","name":"T","fields":[{{"name":"price","type":{{"type":"bytes","logicalType":"decimal","precision":{precision},"scale":{scale}}}}}{extra}]}}"#
        )
    }

    #[tokio::test]
    async fn subjects_are_bounded_in_name_and_number() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("catalog.db")).await.unwrap().with_max_subjects(20);
        let schema = r#"{"type":"string"}"#;
        for bad in ["", "a/../b", "with space", "ctl\u{7}", "50%25", &"x".repeat(256)] {
            let e = registry.register(bad, schema).await.unwrap_err();
            assert_eq!(e.code(), 42208, "{bad:?}: {e}");
            let e = registry.set_compatibility(Some(bad), Compatibility::Full).await.unwrap_err();
            assert_eq!(e.code(), 42208, "{bad:?}: {e}");
            // Reads refuse such a name too, rather than answer for it.
            assert_eq!(registry.compatibility(Some(bad)).await.unwrap_err().code(), 42208, "{bad:?}");
            assert_eq!(registry.versions(bad).await.unwrap_err().code(), 42208, "{bad:?}");
        }
        assert!(registry.register("market.crypto.trades.binance-value", schema).await.is_ok());
        assert!(registry.register(":.ctx:a_b-c+1", schema).await.is_ok());
        // Fill to the limit (levels count as subjects too), then one more is refused,
        // while subjects already known still take new writes.
        for i in 2..20 {
            registry.set_compatibility(Some(&format!("s{i}")), Compatibility::None).await.unwrap();
        }
        let e = registry.register("one-more", schema).await.unwrap_err();
        assert_eq!(e.code(), 42209, "{e}");
        assert_eq!(registry.set_compatibility(Some("one-more"), Compatibility::Full).await.unwrap_err().code(), 42209);
        assert!(registry.set_compatibility(Some("s2"), Compatibility::Full).await.is_ok());
        assert!(registry.register("s3", schema).await.is_ok());
        assert!(registry.set_compatibility(None, Compatibility::Full).await.is_ok(), "the global level is no subject");
    }

    #[test]
    fn decimals_are_compared_by_precision_and_scale() {
        let base = with_price(18, 8, "");
        assert!(Compatibility::Full.check(&base, &base).is_ok());
        let err = Compatibility::Backward.check(&base, &with_price(18, 6, "")).unwrap_err();
        assert!(err.contains("price"), "{err}");
        let added = with_price(18, 8, r#",{"name":"venue","type":["null","string"],"default":null}"#);
        assert!(Compatibility::Full.check(&base, &added).is_ok());
        let required = with_price(18, 8, r#",{"name":"venue","type":"string"}"#);
        assert!(Compatibility::Backward.check(&base, &required).is_err());
        assert!(Compatibility::Forward.check(&base, &required).is_ok());
        assert!(Compatibility::None.check(&base, &with_price(10, 2, "")).is_ok());
    }
}
