"""The chaos suite's judge: compares market.trades, read with pyiceberg (not
K2's own reader), with every trade `k2 exchange-sim` published, fetched from
its REST API (`/api/v3/historicalTrades`, which serves every trade it made,
including those it never sent over the WebSocket).

usage: judge_trades.py DATA_DIR REST_ADDR SYMBOL[,SYMBOL...] [--upto=N]
                       [--partial] [--warehouse=URL] [--s3-*=...]

Per symbol, the published trades are ids first_trade_id..last: --upto=N
stops at N (a bounded market's --trades), else at the newest the simulator
has. --partial judges a table that may still be behind (after a kill, before
a restart has caught up): a trade may be missing, but none may be doubled,
mislabelled or unknown.

Prints one JSON object: per symbol the expected and stored counts, the
missing, doubled, unknown and mismatched ids (the first 20 of each), exact
notional sums; and "ok". Exit status 0 when ok, 1 otherwise.
"""
import json
import sys
import urllib.request
from collections import Counter
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog

options = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
flags = {a for a in sys.argv[1:] if a.startswith("--") and "=" not in a}
positional = [a for a in sys.argv[1:] if not a.startswith("--")]
data_dir, rest, symbols = positional[0], positional[1], positional[2].upper().split(",")
upto = int(options["upto"]) if "upto" in options else None
partial = "--partial" in flags

properties = {
    "uri": f"sqlite:///{data_dir}/catalog.db",
    "warehouse": options.get("warehouse", f"file://{data_dir}/warehouse"),
}
for option, key in [("s3-endpoint", "s3.endpoint"), ("s3-region", "s3.region"),
                    ("s3-key", "s3.access-key-id"), ("s3-secret", "s3.secret-access-key")]:
    if option in options:
        properties[key] = options[option]
catalog = SqlCatalog("k2", **properties)
table = catalog.load_table("market.trades")
rows = table.scan(selected_fields=("symbol", "source_sequence", "price", "quantity", "timestamp", "side")).to_arrow()


def published(symbol):
    """Every trade the simulator made for `symbol`, by id."""
    out, from_id = {}, 0
    while True:
        url = f"http://{rest}/api/v3/historicalTrades?symbol={symbol}&fromId={from_id}&limit=1000"
        with urllib.request.urlopen(url, timeout=30) as response:
            page = json.load(response)
        for t in page:
            if upto is not None and t["id"] > upto:
                return out
            out[t["id"]] = t
        if len(page) < 1000:
            return out
        from_id = page[-1]["id"] + 1


def first(ids, n=20):
    return sorted(ids)[:n]


report, ok = {}, True
for symbol in symbols:
    expected = published(symbol)
    mine = rows.filter(pc.equal(rows["symbol"], symbol))
    seqs = mine["source_sequence"].to_pylist()
    counts = Counter(seqs)
    doubled = [i for i, n in counts.items() if n > 1]
    unknown = [i for i in counts if i not in expected]
    missing = [i for i in expected if i not in counts]
    mismatched = []
    stored_notional = Decimal(0)
    prices = mine["price"].to_pylist()
    quantities = mine["quantity"].to_pylist()
    # Timestamps as integer microseconds since the epoch, whatever pyarrow's unit.
    micros = pc.cast(pc.cast(mine["timestamp"], pa.timestamp("us", tz="UTC")), pa.int64()).to_pylist()
    sides = mine["side"].to_pylist()
    for seq, price, qty, ts, side in zip(seqs, prices, quantities, micros, sides):
        stored_notional += price * qty
        t = expected.get(seq)
        if t is None:
            continue
        want_side = "SELL" if t["isBuyerMaker"] else "BUY"
        if (Decimal(t["price"]) != price or Decimal(t["qty"]) != qty
                or t["time"] * 1000 != ts or want_side != side):
            mismatched.append(seq)
    # The notional of what was published and stored, once each.
    expected_notional = sum((Decimal(t["price"]) * Decimal(t["qty"]) for i, t in expected.items() if i in counts),
                            Decimal(0))
    symbol_ok = not doubled and not unknown and not mismatched and (partial or not missing)
    if not doubled and not unknown:
        symbol_ok = symbol_ok and stored_notional == expected_notional
    ok = ok and symbol_ok
    report[symbol] = {
        "published": len(expected),
        "stored": len(seqs),
        "missing": len(missing),
        "doubled": len(doubled),
        "unknown": len(unknown),
        "mismatched": len(mismatched),
        "first_missing": first(missing),
        "first_doubled": first(doubled),
        "first_unknown": first(unknown),
        "first_mismatched": first(mismatched),
        "stored_notional": str(stored_notional),
        "expected_notional": str(expected_notional),
        "ok": symbol_ok,
    }
print(json.dumps({"ok": ok, "partial": partial, "symbols": report}))
sys.exit(0 if ok else 1)
