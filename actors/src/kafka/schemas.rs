//! Where value schema ids come from: K2's built-in registry (no round trip)
//! or any registry speaking Confluent's REST API.

use std::sync::Arc;

use crate::registry::Registry;

use super::KafkaError;

#[derive(Clone)]
pub enum SchemaSource {
    BuiltIn(Arc<Registry>),
    Remote { url: String, http: reqwest::Client },
}

impl SchemaSource {
    /// The schema text registered under `id`.
    pub async fn schema(&self, id: u32) -> Result<String, KafkaError> {
        match self {
            SchemaSource::BuiltIn(registry) => registry.schema_by_id(i64::from(id)).await.map_err(|e| match e {
                crate::registry::RegistryError::SchemaNotFound(_) => KafkaError::UnknownSchema(id),
                other => KafkaError::Registry(other.to_string()),
            }),
            SchemaSource::Remote { url, http } => {
                let resp = http
                    .get(format!("{}/schemas/ids/{id}", url.trim_end_matches('/')))
                    .send()
                    .await
                    .map_err(|e| KafkaError::Registry(format!("{url}: {e}")))?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Err(KafkaError::UnknownSchema(id));
                }
                let body: serde_json::Value =
                    resp.json().await.map_err(|e| KafkaError::Registry(format!("{url}: {e}")))?;
                body["schema"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| KafkaError::Registry(format!("{url}: no schema {id}: {body}")))
            }
        }
    }

    /// Whether the registry holds any version under `subject`.
    pub async fn knows_subject(&self, subject: &str) -> Result<bool, KafkaError> {
        match self {
            SchemaSource::BuiltIn(registry) => match registry.versions(subject).await {
                Ok(versions) => Ok(!versions.is_empty()),
                Err(crate::registry::RegistryError::SubjectNotFound(_)) => Ok(false),
                Err(e) => Err(KafkaError::Registry(e.to_string())),
            },
            SchemaSource::Remote { url, http } => {
                let resp = http
                    .get(format!("{}/subjects/{subject}/versions", url.trim_end_matches('/')))
                    .send()
                    .await
                    .map_err(|e| KafkaError::Registry(format!("{url}: {e}")))?;
                match resp.status() {
                    reqwest::StatusCode::NOT_FOUND => Ok(false),
                    s if s.is_success() => {
                        let body: serde_json::Value =
                            resp.json().await.map_err(|e| KafkaError::Registry(format!("{url}: {e}")))?;
                        Ok(body.as_array().is_some_and(|v| !v.is_empty()))
                    }
                    s => Err(KafkaError::Registry(format!("{url} answered {s}"))),
                }
            }
        }
    }

    /// Which registry this is, for people.
    pub fn describe(&self) -> String {
        match self {
            SchemaSource::BuiltIn(_) => "this process's own, in its catalog database".to_owned(),
            SchemaSource::Remote { url, .. } => url.clone(),
        }
    }

    /// Registers `schema` under `subject` (or finds it) and returns its id.
    pub async fn id(&self, subject: &str, schema: &str) -> Result<u32, KafkaError> {
        let id = match self {
            SchemaSource::BuiltIn(registry) => {
                registry.register(subject, schema).await.map_err(|e| KafkaError::Registry(e.to_string()))?
            }
            SchemaSource::Remote { url, http } => {
                let resp = http
                    .post(format!("{}/subjects/{subject}/versions", url.trim_end_matches('/')))
                    .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                    .body(serde_json::json!({ "schema": schema }).to_string())
                    .send()
                    .await
                    .map_err(|e| KafkaError::Registry(format!("{url}: {e}")))?;
                let status = resp.status();
                let body: serde_json::Value =
                    resp.json().await.map_err(|e| KafkaError::Registry(format!("{url}: {e}")))?;
                if !status.is_success() {
                    return Err(KafkaError::Registry(format!("{url} answered {status}: {body}")));
                }
                body["id"].as_i64().ok_or_else(|| KafkaError::Registry(format!("{url}: no id in {body}")))?
            }
        };
        u32::try_from(id).map_err(|_| KafkaError::Registry(format!("schema id {id} does not fit the wire format")))
    }
}
