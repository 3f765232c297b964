"""The Flight SQL side of `cargo bench --bench reach`: the same questions
asked of K2 through the ADBC Flight SQL driver and of DuckDB over the same
Parquet files, in one run, one query at a time.

    flight_vs_duckdb.py URI PARQUET_GLOB RUNS

Prints one JSON object: per question, each engine's p50 and p99 in ms and
the row counts (which must agree).
"""

import json
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
import duckdb

DAY0 = "2024-01-0{}T00:00:00+00:00"


def symbol(i):
    return f"S{(i * 7) % 50:02d}USDT"


def day(i):
    return 1 + i % 5


def questions():
    """(name, K2's SQL, DuckDB's SQL) per run index: the same question;
    only the first-and-last-by-time aggregate is spelled per engine."""
    summary = (
        "SELECT count(*) AS n, min(price) AS low, max(price) AS high, sum(quantity) AS volume, "
        "sum(price * quantity) AS notional, {first} AS open, {last} AS close FROM trades "
        "WHERE symbol = '{s}' AND timestamp >= '{a}' AND timestamp < '{b}'"
    )

    def bounds(i, hours=None):
        a = DAY0.format(day(i))
        if hours is None:
            return a, DAY0.format(day(i) + 1)
        h = i % 24
        return (
            f"2024-01-0{day(i)}T{h:02d}:00:00+00:00",
            f"2024-01-0{day(i)}T{h:02d}:59:59.999999+00:00",
        )

    def per(i):
        a, b = bounds(i)
        ha, hb = bounds(i, hours=1)
        s = symbol(i)
        return [
            (
                "daily summary (one symbol, one day)",
                summary.format(
                    first="first_value(price ORDER BY timestamp)",
                    last="last_value(price ORDER BY timestamp)",
                    s=s,
                    a=a,
                    b=b,
                ),
                summary.format(first="arg_min(price, timestamp)", last="arg_max(price, timestamp)", s=s, a=a, b=b),
            ),
            (
                "one-hour page (one symbol, limit 1000)",
                f"SELECT * FROM trades WHERE symbol = '{s}' AND timestamp >= '{ha}' AND timestamp <= '{hb}' "
                "ORDER BY timestamp, message_id LIMIT 1000",
            ),
            (
                "1-minute bars (one symbol, one day)",
                f"SELECT date_trunc('minute', timestamp) AS minute, min(price) AS low, max(price) AS high, "
                f"sum(quantity) AS volume, count(*) AS n FROM trades WHERE symbol = '{s}' "
                f"AND timestamp >= '{a}' AND timestamp < '{b}' GROUP BY 1 ORDER BY 1",
            ),
            (
                "GROUP BY symbol (whole table)",
                "SELECT symbol, count(*) AS n, sum(price * quantity) AS notional FROM trades GROUP BY symbol",
            ),
        ]

    return per


def timed(run):
    t = time.perf_counter()
    n = run()
    return (time.perf_counter() - t) * 1000.0, n


def pct(v, p):
    v = sorted(v)
    return v[max(1, min(len(v), int(-(-len(v) * p // 1)))) - 1]


def main():
    uri, glob, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    duck = duckdb.connect()
    duck.execute("SET threads = 2")
    duck.execute(f"CREATE VIEW trades AS SELECT * FROM read_parquet('{glob}')")
    k2 = flightsql.connect(uri, autocommit=True)
    per = questions()
    out = {}
    for q in range(4):
        name = None
        k2_ms, duck_ms, rows = [], [], []
        for i in range(runs):
            spec = per(i)[q]
            name = spec[0]
            k2_sql = spec[1]
            duck_sql = spec[2] if len(spec) > 2 else spec[1]

            def ask_k2():
                with k2.cursor() as cur:
                    cur.execute(k2_sql)
                    return cur.fetch_arrow_table().num_rows

            def ask_duck():
                return duck.execute(duck_sql).to_arrow_table().num_rows

            a, na = timed(ask_k2)
            b, nb = timed(ask_duck)
            k2_ms.append(a)
            duck_ms.append(b)
            rows.append((na, nb))
        out[name] = {
            "k2_p50_ms": round(pct(k2_ms, 0.5), 2),
            "k2_p99_ms": round(pct(k2_ms, 0.99), 2),
            "duckdb_p50_ms": round(pct(duck_ms, 0.5), 2),
            "duckdb_p99_ms": round(pct(duck_ms, 0.99), 2),
            "k2_over_duckdb_median": round(pct(k2_ms, 0.5) / max(pct(duck_ms, 0.5), 1e-9), 2),
            "rows_agree": all(a == b for a, b in rows),
            "rows_first_run": rows[0],
        }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
