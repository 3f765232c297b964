"""Reads K2's order-book tables with pyiceberg (another engine than K2's)
and judges them as a reader would, printing one JSON object.

usage: read_books.py DATA_DIR

Per symbol, in K2's order (ingestion_timestamp): how many records of each
kind; each segment, from a `synced` to the next `unsynced`, must start from
a venue snapshot (`source` rest) at the synced update id, and its updates
must follow on (the first spans the snapshot's id + 1, each later one starts
right after the one before); `broken` counts segments that do not. K2's
periodic snapshots (`source` periodic) must each be at the update id its
segment has reached: `periodic` counts them, `periodic_off` those that are
not; one outside any segment (a crash can leave one without its updates)
counts in `periodic_outside`.
"""
import json
import sys
from collections import defaultdict

from pyiceberg.catalog.sql import SqlCatalog

data_dir = sys.argv[1]
catalog = SqlCatalog("k2", uri=f"sqlite:///{data_dir}/catalog.db", warehouse=f"file://{data_dir}/warehouse")
updates = catalog.load_table("market.book_updates").scan().to_arrow().to_pylist()
snapshots = catalog.load_table("market.book_snapshots").scan().to_arrow().to_pylist()

records = defaultdict(dict)  # symbol -> (instant, id) -> record
for row in updates:
    key = (row["ingestion_timestamp"], row["message_id"])
    records[row["symbol"]].setdefault(key, {"kind": row["kind"], "first": row["first_update_id"],
                                             "last": row["final_update_id"], "cause": row["cause"]})
for row in snapshots:
    key = (row["ingestion_timestamp"], row["message_id"])
    records[row["symbol"]].setdefault(key, {"kind": "snapshot", "first": row["update_id"],
                                             "last": row["update_id"], "cause": row["source"]})

out = {"rows": {"book_updates": len(updates), "book_snapshots": len(snapshots)}, "symbols": {}}
for symbol, by_key in records.items():
    kinds = defaultdict(int)
    causes = defaultdict(int)
    segments = broken = 0
    periodic = periodic_off = periodic_outside = 0
    why = []  # the first breaks, with where they are
    snapshot = None
    book = None  # the update id a segment has reached; None outside one
    straddle = False
    for (instant, _), r in sorted(by_key.items()):
        kinds[r["kind"]] += 1
        if r["kind"] == "snapshot":
            if r["cause"] == "rest":
                snapshot = r["last"]
            elif r["cause"] == "periodic":
                periodic += 1
                if book is None:
                    periodic_outside += 1
                elif r["last"] != book:
                    periodic_off += 1
                    why.append({"at": str(instant), "book": book, "periodic": r["last"]})
        elif r["kind"] == "synced":
            segments += 1
            if snapshot != r["last"]:
                broken += 1
                why.append({"at": str(instant), "synced": r["last"], "snapshot": snapshot})
                book = None
            else:
                book, straddle = r["last"], True
            snapshot = None
        elif r["kind"] == "unsynced":
            causes[r["cause"]] += 1
            book = None
        elif book is not None:
            if r["last"] <= book:
                continue
            follows = r["first"] == book + 1 or (straddle and r["first"] <= book + 1)
            straddle = False
            if not follows:
                broken += 1
                why.append({"at": str(instant), "book": book, "first": r["first"], "last": r["last"]})
                book = None
            else:
                book = r["last"]
    out["symbols"][symbol] = {"kinds": kinds, "unsynced_causes": causes, "segments": segments, "broken": broken,
                              "periodic": periodic, "periodic_off": periodic_off,
                              "periodic_outside": periodic_outside, "breaks": why[:5]}
print(json.dumps(out))
