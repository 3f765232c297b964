//! reference-data/company_info.csv: which symbol each company id trades under.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use compact_str::CompactString;

use super::AsxError;

/// One company of the reference data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    pub company_id: CompactString,
    pub symbol: CompactString,
    pub name: String,
    pub isin: String,
}

/// company id → company, from a company_info.csv.
#[derive(Debug, Clone, Default)]
pub struct CompanyInfo {
    by_id: HashMap<CompactString, Company>,
}

impl CompanyInfo {
    /// Reads `company_id,symbol,company_name,ISIN,...` with a header line.
    pub fn load(path: &Path) -> Result<Self, AsxError> {
        let file = File::open(path).map_err(|source| AsxError::Io { path: path.to_owned(), source })?;
        Self::read_from(file, path)
    }

    /// [`Self::load`] from `input`; `path` names the input in errors.
    pub fn read_from(input: impl Read, path: &Path) -> Result<Self, AsxError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let mut by_id = HashMap::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record
                .map_err(|e| AsxError::BadReference { path: path.to_owned(), reason: format!("line {line}: {e}") })?;
            let field = |n: usize| record.get(n).map(str::trim).unwrap_or("");
            if field(0).is_empty() || field(1).is_empty() {
                return Err(AsxError::BadReference {
                    path: path.to_owned(),
                    reason: format!("line {line}: company_id and symbol are required"),
                });
            }
            let company = Company {
                company_id: field(0).into(),
                symbol: field(1).to_ascii_uppercase().into(),
                name: field(2).to_owned(),
                isin: field(3).to_owned(),
            };
            by_id.insert(company.company_id.clone(), company);
        }
        Ok(Self { by_id })
    }

    /// The company_info.csv that belongs to a data file laid out like the ASX
    /// sample (`<root>/trades/7078.csv` → `<root>/reference-data/company_info.csv`),
    /// or one beside the file.
    pub fn find_for(data_file: &Path) -> Option<PathBuf> {
        let dir = data_file.parent()?;
        let candidates = [
            dir.join("company_info.csv"),
            dir.join("reference-data").join("company_info.csv"),
            dir.parent()?.join("reference-data").join("company_info.csv"),
        ];
        candidates.into_iter().find(|p| p.is_file())
    }

    pub fn get(&self, company_id: &str) -> Option<&Company> {
        self.by_id.get(company_id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
