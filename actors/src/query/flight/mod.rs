//! The Arrow Flight SQL port (`flight.bind`, off by default): read-only
//! SQL through DataFusion over `trades` and `quotes` (and the book tables
//! where books are stored), each the same exact view as `/v1` (the pinned
//! snapshot plus the rows on their way in), for any Flight SQL client
//! (ADBC, JDBC, DBeaver, pyarrow).
//!
//! - [`session`]: a statement's tables, the read-only check, parameters.
//! - [`decimal_mul`]: products of decimals without a checked multiply.
//! - [`prepared`]: prepared statements held between calls.
//! - [`catalog`]: what clients browse (`GetTables`, `GetSqlInfo`, ...).
//! - [`service`]: keys, pins, limits and the protocol's calls.
//! - [`front`]: the Flight service served: the dispatcher, plus `GetSchema`.
//! - [`cancel`]: the statements running, for `CancelFlightInfo`.
//! - [`planned`]: plans made at `GetFlightInfo`, kept for its `DoGet`.
//! - [`server`]: the supervised actor that owns the port.

pub mod cancel;
pub mod catalog;
pub mod decimal_mul;
pub mod front;
pub mod planned;
pub mod prepared;
pub mod server;
pub mod service;
pub mod session;
