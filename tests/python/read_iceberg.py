"""Reads K2's Iceberg tables with pyiceberg (another engine than K2's own)
and prints what the tests compare with K2's API, as one JSON object.

usage: read_iceberg.py DATA_DIR [CATALOG_NAME] [--append-one] [--warehouse=URL]
                       [--s3-endpoint=URL --s3-region=R --s3-key=ID --s3-secret=S]

--append-one: instead, append one existing trade again as a snapshot of
pyiceberg's own (one that carries no K2 summary keys), as another engine
writing to the table would.
--warehouse: K2's storage.warehouse when it is not DATA_DIR/warehouse; the
--s3-* options are its storage.s3_* keys (path-style addressing, as
pyarrow does with an endpoint).
--snapshot=ID: read market.trades as of that snapshot (time travel) instead
of the current one.
"""
import json
import sys
from decimal import Decimal

import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog

options = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
positional = [a for a in sys.argv[1:] if not a.startswith("--")]
data_dir = positional[0]
name = positional[1] if len(positional) > 1 else "k2"
properties = {
    "uri": f"sqlite:///{data_dir}/catalog.db",
    "warehouse": options.get("warehouse", f"file://{data_dir}/warehouse"),
}
for option, key in [("s3-endpoint", "s3.endpoint"), ("s3-region", "s3.region"),
                    ("s3-key", "s3.access-key-id"), ("s3-secret", "s3.secret-access-key")]:
    if option in options:
        properties[key] = options[option]
catalog = SqlCatalog(name, **properties)
if "--append-one" in sys.argv:
    trades = catalog.load_table("market.trades")
    one = trades.scan(limit=1).to_arrow()
    trades.append(one)
    print(json.dumps({"appended": one.num_rows}))
    sys.exit(0)

def latest_k2(table):
    """The summary of K2's newest snapshot along the current chain (the
    metadata's snapshot list is not in commit order), with the keys of its
    state file."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = dict(snapshot.summary.additional_properties)
        if "k2.flush-generation" in props:
            # The larger keys live in the JSON file `k2.state` names.
            if "k2.state" in props:
                with table.io.new_input(props["k2.state"]).open() as f:
                    for key, value in json.loads(f.read()).items():
                        props[key] = json.dumps(value)
            return props
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return {}


out = {}
for table_name in ("trades", "quotes"):
    table = catalog.load_table(f"market.{table_name}")
    snapshot_id = int(options["snapshot"]) if "snapshot" in options and table_name == "trades" else None
    scan = table.scan(snapshot_id=snapshot_id)
    rows = scan.to_arrow()
    files = [task.file for task in scan.plan_files()]
    per_partition = {}
    for f in files:
        key = str(f.partition)
        per_partition[key] = per_partition.get(key, 0) + 1
    current = table.current_snapshot()
    entry = {
        "data_files": len(files),
        "files_per_partition_max": max(per_partition.values(), default=0),
        "partitions": len(per_partition),
        "operation": current.summary.operation.value if current is not None else None,
        "total_records": int(current.summary.additional_properties.get("total-records", 0)) if current is not None else 0,
        "rows": rows.num_rows,
        "distinct_message_ids": len(pc.unique(rows["message_id"])) if rows.num_rows else 0,
        # Rows whose optional enrichment was stripped (or never had any).
        "without_vendor_data": rows["vendor_data"].null_count if rows.num_rows else 0,
        "snapshots": len(table.metadata.snapshots),
        "partition_spec": str(table.spec()),
        # K2 processes that committed snapshots (each process is one writer).
        "writers": len({s.summary.additional_properties["k2.writer"] for s in table.metadata.snapshots
                        if "k2.writer" in s.summary.additional_properties}),
        # Trade numbers the latest K2 snapshot records as open gaps.
        "open_gaps": sum(
            to - frm + 1
            for ranges in json.loads(latest_k2(table).get("k2.open-gaps", "{}")).values()
            for frm, to in ranges
        ),
        "k2_generation": latest_k2(table).get("k2.flush-generation"),
    }
    if table_name == "trades" and rows.num_rows:
        # decimal(18,8) * decimal(18,8) is exact in pyarrow (precision 37).
        notional = pc.sum(pc.multiply(rows["price"], rows["quantity"])).as_py()
        entry["notional"] = str(Decimal(notional))
        per_symbol = {}
        for symbol in pc.unique(rows["symbol"]).to_pylist():
            seqs = rows.filter(pc.equal(rows["symbol"], symbol))["source_sequence"]
            per_symbol[symbol] = {
                "rows": len(seqs),
                "distinct": len(pc.unique(seqs)),
                "min": pc.min(seqs).as_py(),
                "max": pc.max(seqs).as_py(),
            }
        entry["per_symbol"] = per_symbol
    out[table_name] = entry
print(json.dumps(out))
