//! API keys (`http.api_keys`): the one check behind every route that needs
//! a key (the `/v1` API, the schema registry's writes).

/// Whether `given` (the `X-API-Key` header) is one of `keys`; with no keys
/// configured every request is accepted. `Err` says what is wrong, for a
/// 401's body.
pub fn check(keys: &[String], given: Option<&str>) -> Result<(), &'static str> {
    if keys.is_empty() {
        return Ok(());
    }
    // Compared in full every time, so timing says nothing about a key.
    let ok = given.is_some_and(|g| keys.iter().fold(false, |hit, k| hit | constant_eq(k.as_bytes(), g.as_bytes())));
    match (ok, given) {
        (true, _) => Ok(()),
        (false, Some(_)) => Err("the X-API-Key is not accepted"),
        (false, None) => Err("an X-API-Key header is required"),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn a_key_is_needed_only_when_keys_are_configured() {
        assert_eq!(check(&[], None), Ok(()));
        let keys = ["k1".to_owned(), "k2".to_owned()];
        assert_eq!(check(&keys, Some("k2")), Ok(()));
        assert!(check(&keys, Some("k3")).is_err());
        assert!(check(&keys, Some("k")).is_err());
        assert!(check(&keys, None).is_err());
    }
}
