//! `vendor_data`: venue-specific fields as a small string map.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A venue's own fields, kept sorted by key with unique keys so that two equal
/// maps compare equal whatever order they were built or decoded in.
///
/// A sorted vector rather than a hash map: it holds a handful of short entries,
/// and the keys and values fit inline in [`CompactString`], so building one costs
/// a single allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "std::collections::BTreeMap<CompactString, CompactString>")]
#[serde(into = "std::collections::BTreeMap<CompactString, CompactString>")]
pub struct VendorData(Vec<(CompactString, CompactString)>);

impl VendorData {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Builds a map from entries the caller already has sorted by key with no
    /// key twice (a parser with fixed keys): no comparisons at run time.
    pub(crate) fn from_sorted(entries: Vec<(CompactString, CompactString)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "keys out of order: {entries:?}");
        Self(entries)
    }

    /// Inserts or replaces a value.
    pub fn insert(&mut self, key: impl Into<CompactString>, value: impl Into<CompactString>) {
        let key = key.into();
        let value = value.into();
        // Parsers insert in key order: appending is then the whole job.
        if self.0.last().is_none_or(|(last, _)| last.as_str() < key.as_str()) {
            self.0.push((key, value));
            return;
        }
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key.as_str())) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.0[i].1.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>> FromIterator<(K, V)> for VendorData {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl From<std::collections::BTreeMap<CompactString, CompactString>> for VendorData {
    fn from(map: std::collections::BTreeMap<CompactString, CompactString>) -> Self {
        // BTreeMap iterates sorted and unique: the invariant holds as is.
        Self(map.into_iter().collect())
    }
}

impl From<VendorData> for std::collections::BTreeMap<CompactString, CompactString> {
    fn from(map: VendorData) -> Self {
        map.0.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insertion_order_does_not_matter() {
        let a: VendorData = [("venue", "X"), ("company_id", "7078"), ("venue", "Y")].into_iter().collect();
        let b: VendorData = [("company_id", "7078"), ("venue", "Y")].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.get("venue"), Some("Y"));
        assert_eq!(a.len(), 2);
    }
}
