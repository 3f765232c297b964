"""The rows of one of K2's order-book tables as pyiceberg reads them
(another engine than K2's own), for a test to compare with what K2's Flight
SQL port answered. Prints one JSON object: {"rows": [[message_id, side,
level, price, quantity, ingestion_timestamp], ...]}, values as text.

usage: book_rows.py DATA_DIR TABLE SYMBOL UNTIL_MICROS

TABLE is book_updates or book_snapshots; only SYMBOL's rows recorded at or
before UNTIL_MICROS (ingestion_timestamp, epoch microseconds) are printed.
"""
import json
import sys
from datetime import datetime, timezone

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

from flight_client import text  # the same text as the rows SQL answered

data_dir, table, symbol, until = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
catalog = SqlCatalog("k2", uri=f"sqlite:///{data_dir}/catalog.db", warehouse=f"file://{data_dir}/warehouse")
rows = catalog.load_table(f"market.{table}").scan(row_filter=EqualTo("symbol", symbol)).to_arrow().to_pylist()
epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(at):
    delta = at - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


out = [
    [text(r[c]) for c in ("message_id", "side", "level", "price", "quantity", "ingestion_timestamp")]
    for r in rows
    if micros(r["ingestion_timestamp"]) <= until
]
json.dump({"rows": out}, sys.stdout)
