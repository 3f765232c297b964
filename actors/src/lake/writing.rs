//! Data files written but not committed yet (a flush retrying its commit, a
//! compaction under way): the orphan sweep must not take them, however old
//! they are, since their commit may still land.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Clone, Default)]
pub struct WritingFiles(Arc<Mutex<HashSet<String>>>);

impl WritingFiles {
    /// A scope whose files count as being written until it is dropped.
    pub fn scope(&self) -> WritingScope {
        WritingScope { all: self.clone(), mine: Mutex::new(Vec::new()) }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(path)
    }
}

pub struct WritingScope {
    all: WritingFiles,
    mine: Mutex<Vec<String>>,
}

impl WritingScope {
    pub fn add<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        let mut all = self.all.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut mine = self.mine.lock().unwrap_or_else(PoisonError::into_inner);
        for p in paths {
            all.insert(p.to_owned());
            mine.push(p.to_owned());
        }
    }
}

impl Drop for WritingScope {
    fn drop(&mut self) {
        let mut all = self.all.0.lock().unwrap_or_else(PoisonError::into_inner);
        for p in self.mine.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            all.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_count_as_written_while_their_scope_lives() {
        let writing = WritingFiles::default();
        let scope = writing.scope();
        scope.add(["a", "b"]);
        let other = writing.scope();
        other.add(["c"]);
        assert!(writing.contains("a") && writing.contains("c"));
        drop(scope);
        assert!(!writing.contains("a") && !writing.contains("b") && writing.contains("c"));
    }
}
