//! The tables maintenance looks after: trades and quotes, and the
//! order-book tables (`book_updates`, `book_snapshots`), which grow fastest
//! of all (a row per level change).

use iceberg::TableIdent;

use crate::lake::LakeError;

use crate::lake::books::tables::BookTable;
use crate::lake::{Lake, TableKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Maintained {
    Rows(TableKind),
    Book(BookTable),
}

impl Maintained {
    pub const ALL: [Maintained; 4] = [
        Maintained::Rows(TableKind::Trades),
        Maintained::Rows(TableKind::Quotes),
        Maintained::Book(BookTable::Updates),
        Maintained::Book(BookTable::Snapshots),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Maintained::Rows(kind) => kind.name(),
            Maintained::Book(table) => table.name(),
        }
    }

    /// By table name, as `k2 maintain --table` and `maintenance.retention`
    /// spell it.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn ident(self, lake: &Lake) -> TableIdent {
        match self {
            Maintained::Rows(kind) => lake.ident(kind),
            Maintained::Book(table) => {
                TableIdent::new(lake.ident(TableKind::Trades).namespace().clone(), table.name().to_owned())
            }
        }
    }

    /// The time column the table's files are sorted by within a symbol (and
    /// partitioned by day on): the event time for trades and quotes, K2's
    /// recording instant for books.
    pub fn time_column(self) -> &'static str {
        match self {
            Maintained::Rows(_) => "timestamp",
            Maintained::Book(_) => "ingestion_timestamp",
        }
    }

    /// Trades or quotes: the tables queries pin and the tails follow.
    pub fn rows(self) -> Option<TableKind> {
        match self {
            Maintained::Rows(kind) => Some(kind),
            Maintained::Book(_) => None,
        }
    }
}

/// Those of `kinds` whose table exists: the book tables only where books
/// are stored.
pub async fn existing(lake: &Lake, kinds: &[Maintained]) -> Result<Vec<Maintained>, LakeError> {
    let mut out = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        if kind.rows().is_some() || lake.catalog().table_exists(&kind.ident(lake)).await? {
            out.push(kind);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_found_by_its_name() {
        for t in Maintained::ALL {
            assert_eq!(Maintained::named(t.name()), Some(t));
        }
        assert_eq!(Maintained::named("book_updates"), Some(Maintained::Book(BookTable::Updates)));
        assert_eq!(Maintained::named("orders"), None);
        let names: Vec<&str> = Maintained::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names, crate::runtime::config::MAINTAINED_TABLES, "the names config accepts");
    }
}
