//! Registry state in SQLite. Schema ids are global: the same schema (by its
//! Avro Parsing Canonical Form) has one id under every subject, as in
//! Confluent's registry. Writes are serialised in process; the data
//! directory lock keeps other K2 processes out.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use k2_core::registry_wire::{Compatibility, Incompatibility, RequestError, check_subject, parse_schema};
use serde::Serialize;
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
    /// A body, subject name, level or schema refused for what it says.
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {reason}")]
    Incompatible { subject: String, reason: Incompatibility },
    #[error("The registry holds as many subjects as its limit allows; {0:?} would be one more")]
    TooManySubjects(String),
    #[error("registry storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// Subjects one registry holds at most: K2 needs a few per topic, and an
/// unbounded count would let any writer fill the catalog.
pub const MAX_SUBJECTS: i64 = 10_000;

impl RegistryError {
    /// Confluent's error code (the HTTP status is its first three digits).
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound { .. } => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::Request(e) => e.code(),
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidVersion(_) => 42202,
            // K2's own code, in Confluent's shape.
            RegistryError::TooManySubjects(_) => 42209,
            RegistryError::Storage(_) => 50001,
        }
    }
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
        let canonical = parse_schema(schema)?.canonical_form();
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
        let parsed = parse_schema(schema)?;
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
        parse_schema(schema)?;
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
                return Compatibility::parse(&r.get::<String, _>(0)).map_err(RegistryError::from);
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
}
