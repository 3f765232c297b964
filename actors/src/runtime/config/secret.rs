//! Credentials in the configuration: never shown by `Debug` (so never in a
//! log line or `k2 run --check-config`), and given either as text or as
//! `{ file = "/run/secrets/name" }`, read once at load (the way container
//! platforms hand secrets over), so the value need not sit in a config file
//! or the environment at all.

use serde::Deserialize;

/// A credential. Text only: figment reads an unquoted environment value
/// that looks like a number as one, which would lose leading zeros, so such
/// a value is refused with the fix named.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a string or { file = \"path\" } (in an environment variable, quote one that looks like a number: '\"0123\"')",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let mut path: Option<String> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "file" => path = Some(map.next_value()?),
                        other => return Err(serde::de::Error::unknown_field(other, &["file"])),
                    }
                }
                let path = path.ok_or_else(|| serde::de::Error::missing_field("file"))?;
                // The error names the file, never what it holds.
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| serde::de::Error::custom(format!("secret file {path}: {e}")))?;
                Ok(Secret(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `text` with the password of every `scheme://user:password@` replaced,
/// for showing configuration values that are URLs (a Redis URL may carry
/// one).
pub fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail.find(|c: char| c == '/' || c == '"' || c.is_whitespace()).unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str("<redacted>");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_text_or_a_file_and_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cr3t-from-file\n").unwrap();
        let text = format!("a = \"plain-s3cr3t\"\nb = {{ file = \"{}\" }}\n", file.display());
        #[derive(Deserialize, Debug)]
        struct Two {
            a: Secret,
            b: Secret,
        }
        let two: Two = figment::Figment::from(<figment::providers::Toml as figment::providers::Format>::string(&text))
            .extract()
            .unwrap();
        assert_eq!((two.a.expose(), two.b.expose()), ("plain-s3cr3t", "s3cr3t-from-file"));
        let shown = format!("{two:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let missing = "a = \"x\"\nb = { file = \"/nonexistent/k2-key\" }\n";
        let e = figment::Figment::from(<figment::providers::Toml as figment::providers::Format>::string(missing))
            .extract::<Two>()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/k2-key"), "{e}");
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(mask_url_passwords("url: \"redis://:pw@host:6379/0\""), "url: \"redis://:<redacted>@host:6379/0\"");
        assert_eq!(
            mask_url_passwords("redis://user:pw@h/0 and http://h:80/x"),
            "redis://user:<redacted>@h/0 and http://h:80/x"
        );
        assert_eq!(mask_url_passwords("no url"), "no url");
    }
}
