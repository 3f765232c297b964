//! The Iceberg catalog `[storage]` describes: the SQL catalog on SQLite in
//! the data directory (the embedded default) or a REST catalog, and behind
//! its FileIO the storage the warehouse's scheme calls for: the local disk
//! or an S3-compatible store. Every file K2 reads or writes in the tables
//! goes through that FileIO, so nothing else needs to know which it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iceberg::io::{LocalFsStorageFactory, StorageFactory};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::{OpenDalResolvingStorageFactory, OpenDalStorageFactory};

use super::LakeError;
use crate::runtime::config::{CatalogKind, StorageConfig, Warehouse};

/// Which storage backs the catalog's FileIO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// iceberg's own local-disk storage (`file://`), as K2 always had.
    LocalFs,
    /// OpenDAL's S3 (`s3://`, `s3a://`).
    S3,
    /// Chosen per file from its location's scheme: a REST catalog that
    /// picks the warehouse itself may hand out any location.
    ByLocation,
}

impl Storage {
    fn factory(self) -> Arc<dyn StorageFactory> {
        match self {
            Storage::LocalFs => Arc::new(LocalFsStorageFactory),
            Storage::S3 => Arc::new(OpenDalStorageFactory::S3 { customized_credential_load: None }),
            Storage::ByLocation => Arc::new(OpenDalResolvingStorageFactory::new()),
        }
    }
}

/// How the catalog is to be opened: everything decided from the
/// configuration before anything is touched.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: CatalogKind,
    /// The catalog's properties (its own and, forwarded to FileIO, the
    /// storage's).
    pub props: HashMap<String, String>,
    pub storage: Storage,
    /// A local warehouse directory to create first.
    pub local_warehouse: Option<PathBuf>,
    /// Where the tables are, for people (logs, `k2 run`'s banner).
    pub describe: String,
}

/// iceberg-rust's property names (iceberg::io's S3 constants).
const S3_ENDPOINT: &str = "s3.endpoint";
const S3_REGION: &str = "s3.region";
const S3_ACCESS_KEY_ID: &str = "s3.access-key-id";
const S3_SECRET_ACCESS_KEY: &str = "s3.secret-access-key";
const S3_PATH_STYLE: &str = "s3.path-style-access";

/// Decides the catalog for `config`, with `dir` the absolute data directory.
/// The configuration was validated at load; a value that still does not fit
/// is refused here naming its key.
pub fn plan(config: &StorageConfig, dir: &Path) -> Result<Plan, LakeError> {
    let warehouse = config.warehouse().map_err(LakeError::Config)?;
    let file_url = |path: &Path| format!("file://{}", path.display());
    let mut props = HashMap::new();
    let (storage, local_warehouse, describe) = match config.catalog {
        CatalogKind::Sql => {
            let catalog_db = dir.join("catalog.db");
            props.insert("uri".to_owned(), format!("sqlite:{}?mode=rwc", catalog_db.display()));
            props.insert("sql_bind_style".to_owned(), SqlBindStyle::QMark.to_string());
            let (location, storage, local) = match &warehouse {
                Warehouse::Default => {
                    let path = dir.join("warehouse");
                    (file_url(&path), Storage::LocalFs, Some(path))
                }
                Warehouse::Local(path) => (file_url(path), Storage::LocalFs, Some(path.clone())),
                Warehouse::S3(url) => (url.clone(), Storage::S3, None),
                Warehouse::Named(name) => {
                    return Err(LakeError::Config(format!(
                        "storage.warehouse: {name:?} is a warehouse name, which only a REST catalog knows"
                    )));
                }
            };
            let describe = match warehouse {
                // What K2 always printed: the one directory holding it all.
                Warehouse::Default => dir.display().to_string(),
                _ => format!("{location} (SQL catalog {})", catalog_db.display()),
            };
            props.insert("warehouse".to_owned(), location);
            (storage, local, describe)
        }
        CatalogKind::Rest => {
            if config.catalog_uri.is_empty() {
                return Err(LakeError::Config(
                    "storage.catalog_uri must be set when storage.catalog = \"rest\"".into(),
                ));
            }
            props.insert("uri".to_owned(), config.catalog_uri.trim_end_matches('/').to_owned());
            let at = format!("REST catalog at {}", config.catalog_uri);
            let (location, storage, local) = match &warehouse {
                // The catalog decides where tables go, so their locations
                // are known only as they come.
                Warehouse::Default => (None, Storage::ByLocation, None),
                Warehouse::Local(path) => (Some(file_url(path)), Storage::LocalFs, Some(path.clone())),
                Warehouse::S3(url) => (Some(url.clone()), Storage::S3, None),
                Warehouse::Named(name) => (Some(name.clone()), Storage::ByLocation, None),
            };
            let describe = match &location {
                None => format!("the {at}"),
                Some(l) => format!("{l} ({at})"),
            };
            if let Some(location) = location {
                props.insert("warehouse".to_owned(), location);
            }
            (storage, local, describe)
        }
    };
    if storage != Storage::LocalFs {
        props.extend(s3_props(config));
    }
    Ok(Plan { kind: config.catalog, props, storage, local_warehouse, describe })
}

/// The S3 keys that are set, under iceberg-rust's property names. Unset
/// ones are left out so that the AWS defaults (and a REST catalog's own
/// configuration) apply.
fn s3_props(config: &StorageConfig) -> Vec<(String, String)> {
    let mut props = Vec::new();
    for (key, value) in [
        (S3_ENDPOINT, config.s3_endpoint.as_str()),
        (S3_REGION, config.s3_region.as_str()),
        (S3_ACCESS_KEY_ID, config.s3_access_key_id.as_str()),
        (S3_SECRET_ACCESS_KEY, config.s3_secret_access_key.expose()),
    ] {
        if !value.is_empty() {
            props.push((key.to_owned(), value.to_owned()));
        }
    }
    if config.s3_path_style {
        props.push((S3_PATH_STYLE.to_owned(), "true".to_owned()));
    }
    props
}

/// Opens the catalog `plan` describes under `name`. The REST catalog
/// connects on its first call, not here.
pub async fn open(plan: &Plan, name: &str) -> Result<Arc<dyn Catalog>, LakeError> {
    if let Some(path) = &plan.local_warehouse {
        std::fs::create_dir_all(path).map_err(|source| LakeError::Dir { path: path.clone(), source })?;
    }
    let factory = plan.storage.factory();
    let context = |source| LakeError::Open { what: plan.describe.clone(), source: Box::new(source) };
    Ok(match plan.kind {
        CatalogKind::Sql => {
            let catalog =
                SqlCatalogBuilder::default().with_storage_factory(factory).load(name, plan.props.clone()).await;
            Arc::new(catalog.map_err(context)?)
        }
        CatalogKind::Rest => {
            let catalog =
                RestCatalogBuilder::default().with_storage_factory(factory).load(name, plan.props.clone()).await;
            Arc::new(catalog.map_err(context)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::{Config, ConfigError};
    use figment::providers::Env;

    fn load(storage: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k2.toml");
        std::fs::write(&file, format!("[storage]\n{storage}")).unwrap();
        Config::load_from(Some(&file), Env::prefixed("K2_TEST_NOTHING_SET__").split("__"))
    }

    fn plan_of(storage: &str) -> Plan {
        let config = load(storage).unwrap();
        plan(&config.storage, Path::new("/data")).unwrap()
    }

    fn props(p: &Plan) -> Vec<(&str, &str)> {
        let mut v: Vec<_> = p.props.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        v.sort();
        v
    }

    #[test]
    fn the_default_is_the_sql_catalog_with_the_warehouse_beside_it_exactly_as_before() {
        let p = plan_of("");
        assert_eq!(p.kind, CatalogKind::Sql);
        assert_eq!(p.storage, Storage::LocalFs);
        assert_eq!(
            props(&p),
            [
                ("sql_bind_style", "QMark"),
                ("uri", "sqlite:/data/catalog.db?mode=rwc"),
                ("warehouse", "file:///data/warehouse"),
            ]
        );
        assert_eq!(p.local_warehouse.as_deref(), Some(Path::new("/data/warehouse")));
        assert_eq!(p.describe, "/data");
    }

    #[test]
    fn an_s3_warehouse_under_the_sql_catalog_gets_s3_storage_and_every_s3_key() {
        let p = plan_of(
            "warehouse = \"s3://k2-warehouse/\"\ns3_endpoint = \"http://minio:9000\"\ns3_region = \"us-east-1\"\n\
             s3_access_key_id = \"k2\"\ns3_secret_access_key = \"k2-secret\"\ns3_path_style = true\n",
        );
        assert_eq!(p.storage, Storage::S3);
        assert_eq!(p.local_warehouse, None);
        assert_eq!(
            props(&p),
            [
                ("s3.access-key-id", "k2"),
                ("s3.endpoint", "http://minio:9000"),
                ("s3.path-style-access", "true"),
                ("s3.region", "us-east-1"),
                ("s3.secret-access-key", "k2-secret"),
                ("sql_bind_style", "QMark"),
                ("uri", "sqlite:/data/catalog.db?mode=rwc"),
                // No trailing slash: table locations would get `//`.
                ("warehouse", "s3://k2-warehouse"),
            ]
        );
        assert!(p.describe.starts_with("s3://k2-warehouse (SQL catalog /data/catalog.db"), "{}", p.describe);
    }

    #[test]
    fn unset_s3_keys_are_left_to_the_aws_defaults() {
        let p = plan_of("warehouse = \"s3a://b/prefix\"\n");
        assert_eq!(p.storage, Storage::S3);
        assert!(p.props.keys().all(|k| !k.starts_with("s3.")), "{:?}", p.props);
        assert_eq!(p.props["warehouse"], "s3a://b/prefix");
    }

    #[test]
    fn a_file_warehouse_is_local_disk_without_a_trailing_slash() {
        let p = plan_of("warehouse = \"file:///srv/k2/tables/\"\n");
        assert_eq!((p.storage, p.props["warehouse"].as_str()), (Storage::LocalFs, "file:///srv/k2/tables"));
        assert_eq!(p.local_warehouse.as_deref(), Some(Path::new("/srv/k2/tables")));
        assert!(p.props.keys().all(|k| !k.starts_with("s3.")), "{:?}", p.props);
    }

    #[test]
    fn a_rest_catalog_gets_its_uri_the_warehouse_and_the_s3_keys() {
        let p = plan_of(
            "catalog = \"rest\"\ncatalog_uri = \"http://iceberg-rest:8181/\"\nwarehouse = \"s3://k2-warehouse/lake\"\n\
             s3_endpoint = \"http://minio:9000\"\ns3_path_style = true\n",
        );
        assert_eq!(p.kind, CatalogKind::Rest);
        assert_eq!(p.storage, Storage::S3);
        assert_eq!(
            props(&p),
            [
                ("s3.endpoint", "http://minio:9000"),
                ("s3.path-style-access", "true"),
                ("uri", "http://iceberg-rest:8181"),
                ("warehouse", "s3://k2-warehouse/lake"),
            ]
        );
        assert_eq!(p.describe, "s3://k2-warehouse/lake (REST catalog at http://iceberg-rest:8181/)");
    }

    #[test]
    fn a_rest_catalog_without_a_warehouse_lets_the_catalog_choose_and_reads_by_location() {
        let p = plan_of("catalog = \"rest\"\ncatalog_uri = \"https://catalog.example:8181\"\n");
        assert_eq!(p.storage, Storage::ByLocation);
        assert_eq!(p.local_warehouse, None, "no local directory is made for a REST catalog's tables");
        assert!(!p.props.contains_key("warehouse"));
        let named = plan_of("catalog = \"rest\"\ncatalog_uri = \"http://c:8181\"\nwarehouse = \"k2\"\n");
        assert_eq!((named.storage, named.props["warehouse"].as_str()), (Storage::ByLocation, "k2"));
    }

    #[test]
    fn bad_storage_values_are_refused_naming_the_key() {
        for (storage, key, words) in [
            ("catalog = \"hive\"\n", "catalog", "hive"),
            ("catalog = \"rest\"\n", "storage.catalog_uri", "must be set"),
            ("catalog = \"rest\"\ncatalog_uri = \"iceberg-rest:8181\"\n", "storage.catalog_uri", "http"),
            ("catalog = \"rest\"\ncatalog_uri = \"ftp://c/\"\n", "storage.catalog_uri", "http"),
            ("catalog_uri = \"http://c:8181\"\n", "storage.catalog_uri", "only read"),
            ("warehouse = \"k2-bucket\"\n", "storage.warehouse", "URL"),
            ("warehouse = \"gs://b/\"\n", "storage.warehouse", "gs://"),
            ("warehouse = \"s3:///prefix\"\n", "storage.warehouse", "bucket"),
            ("warehouse = \"file://relative/dir\"\n", "storage.warehouse", "absolute"),
            ("s3_endpoint = \"minio:9000\"\n", "storage.s3_endpoint", "http"),
            ("s3_access_key_id = \"k2\"\n", "storage.s3_secret_access_key", "together"),
            ("s3_path_style = \"yes\"\n", "s3_path_style", "bool"),
        ] {
            let err = load(storage).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(words), "{storage:?}: {err}");
        }
    }

    #[test]
    fn a_secret_is_text_and_never_shows_in_debug() {
        let config = load("s3_access_key_id = \"k2\"\ns3_secret_access_key = \"0012345\"\n").unwrap();
        assert_eq!(config.storage.s3_secret_access_key.expose(), "0012345");
        assert!(!format!("{config:?}").contains("0012345"));
        // What an unquoted K2__STORAGE__S3_SECRET_ACCESS_KEY=0012345 becomes.
        let err = load("s3_access_key_id = \"k2\"\ns3_secret_access_key = 12345\n").unwrap_err().to_string();
        assert!(err.contains("s3_secret_access_key") && err.contains("quote"), "{err}");
    }
}
