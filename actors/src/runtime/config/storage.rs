//! `[storage]`: where the catalog and the warehouse are, and the
//! credentials (never shown by `Debug`).

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `catalog.db` (the Iceberg SQL catalog and the schema registry),
    /// the spill and, unless `warehouse` says otherwise, `warehouse/`.
    pub data_dir: std::path::PathBuf,
    /// The catalog's name; other engines must open it by the same name.
    pub catalog_name: String,
    pub namespace: String,
    /// Which Iceberg catalog holds the tables.
    pub catalog: CatalogKind,
    /// The REST catalog's base URL (`catalog = "rest"`).
    pub catalog_uri: String,
    /// Where data and metadata files go: empty for `{data_dir}/warehouse`,
    /// else a URL (`s3://bucket/prefix`, `file:///abs/path`); a REST
    /// catalog may also take a warehouse name it knows.
    pub warehouse: String,
    /// S3-compatible object store; empty keys leave the AWS defaults
    /// (environment, profile, instance role) in force.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
    /// `bucket` in the path, not the host name (MinIO, most self-hosted
    /// stores).
    pub s3_path_style: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// Iceberg's SQL catalog on SQLite in `data_dir` (the embedded default).
    Sql,
    /// An Iceberg REST catalog at `catalog_uri`.
    Rest,
}

/// Where the warehouse is, as `storage.warehouse` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warehouse {
    /// `{data_dir}/warehouse` (the key is empty).
    Default,
    /// A `file://` URL: a local directory.
    Local(std::path::PathBuf),
    /// An `s3://` (or `s3a://`) URL, without a trailing slash.
    S3(String),
    /// A REST catalog's own name for a warehouse (not a URL).
    Named(String),
}

impl StorageConfig {
    /// What `warehouse` names, or why it is refused (naming the key).
    pub fn warehouse(&self) -> Result<Warehouse, String> {
        let raw = self.warehouse.trim();
        if raw.is_empty() {
            return Ok(Warehouse::Default);
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            // Polaris and Lakekeeper call a warehouse by name; the SQL
            // catalog needs a place.
            return match self.catalog {
                CatalogKind::Rest if !raw.contains(['/', ':']) => Ok(Warehouse::Named(raw.to_owned())),
                _ => Err(format!(
                    "storage.warehouse must be empty (for {{data_dir}}/warehouse) or a URL such as s3://bucket/prefix or file:///abs/path, not {raw:?}"
                )),
            };
        };
        match scheme {
            "file" => {
                // Table locations are the warehouse + "/namespace/table".
                let path = std::path::Path::new(rest.trim_end_matches('/'));
                if path.is_absolute() {
                    Ok(Warehouse::Local(path.to_owned()))
                } else {
                    Err(format!("storage.warehouse: a file URL needs an absolute path (file:///abs/path), not {raw:?}"))
                }
            }
            "s3" | "s3a" => {
                let bucket = rest.split('/').next().unwrap_or_default();
                if bucket.is_empty() {
                    Err(format!("storage.warehouse: an S3 URL names a bucket (s3://bucket/prefix), not {raw:?}"))
                } else {
                    Ok(Warehouse::S3(raw.trim_end_matches('/').to_owned()))
                }
            }
            other => Err(format!("storage.warehouse: scheme {other}:// is not supported (s3:// or file://)")),
        }
    }

    /// Every problem of `[storage]`, each naming its key.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.catalog_name.is_empty() {
            problems.push("storage.catalog_name must not be empty".to_owned());
        }
        if self.namespace.is_empty() {
            problems.push("storage.namespace must not be empty".to_owned());
        }
        match self.catalog {
            CatalogKind::Rest if self.catalog_uri.is_empty() => {
                problems.push("storage.catalog_uri must be set when storage.catalog = \"rest\"".to_owned())
            }
            CatalogKind::Rest => {
                if let Err(e) = http_url(&self.catalog_uri) {
                    problems.push(format!("storage.catalog_uri {e}"));
                }
            }
            CatalogKind::Sql if !self.catalog_uri.is_empty() => problems.push(
                "storage.catalog_uri is only read when storage.catalog = \"rest\"; the SQL catalog lives in storage.data_dir"
                    .to_owned(),
            ),
            CatalogKind::Sql => {}
        }
        if let Err(e) = self.warehouse() {
            problems.push(e);
        }
        if !self.s3_endpoint.is_empty()
            && let Err(e) = http_url(&self.s3_endpoint)
        {
            problems.push(format!("storage.s3_endpoint {e}"));
        }
        if self.s3_access_key_id.is_empty() != self.s3_secret_access_key.is_empty() {
            problems.push(
                "storage.s3_access_key_id and storage.s3_secret_access_key are set together or not at all".to_owned(),
            );
        }
        problems
    }
}

/// An `http://` or `https://` URL with a host.
fn http_url(text: &str) -> Result<(), String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err(format!("must be an http:// or https:// URL, not {text:?}")),
        Err(e) => Err(format!("is not a URL ({e}): {text:?}")),
    }
}
