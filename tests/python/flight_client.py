"""A Flight SQL client for K2's tests: the ADBC Flight SQL driver (and
pyarrow's Flight client for GetTables), as a user would connect.

    flight_client.py URI KEY SYMBOL SNAPSHOT
    flight_client.py URI KEY --sql SQL [HEADER=VALUE ...]
      (one statement, with call headers such as x-k2-source=historical)
    flight_client.py URI KEY --sources SQL
      (SQL as x-k2-source realtime, hybrid, then historical, each on a
      connection opened beforehand, so the three run within milliseconds)
    flight_client.py URI KEY --tables
      (the tables ADBC's get_objects lists, each with its columns)
    flight_client.py URI KEY --owners OTHER_KEY SQL
      (pyarrow: KEY prepares SQL; OTHER_KEY tries to run and to close it;
      then KEY runs it)
    flight_client.py URI KEY --stalled SQL_HELD SQL_NEXT SECONDS
      (reads one batch of SQL_HELD and stops reading; SECONDS later runs
      SQL_NEXT on a second connection)
    flight_client.py URI KEY --cancel SQL
      (pyarrow: fetches SQL in a thread and cancels it with
      CancelFlightInfo; then cancels a second one before fetching it)

Prints one JSON object: what each call returned or the error it raised.
KEY is the API key ("" for none); SYMBOL the symbol of the prepared query;
SNAPSHOT a trades snapshot id to travel to.
"""

import json
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions
import pyarrow.flight as flight


def connect(uri, key, headers=None):
    options = {}
    if key:
        options[DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {key}"
    for name, value in (headers or {}).items():
        options[f"{DatabaseOptions.RPC_CALL_HEADER_PREFIX.value}{name}"] = value
    return flightsql.connect(uri, db_kwargs=options)


def text(value):
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def rows(cursor):
    table = cursor.fetch_arrow_table()
    return {
        "columns": [f"{f.name}:{f.type}" for f in table.schema],
        "rows": [[text(v) for v in row.values()] for row in table.to_pylist()],
    }


def varint(n):
    n &= (1 << 64) - 1  # protobuf writes a negative int32 as 10 bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def command(name, body=b""):
    """A Flight SQL command as the protocol sends it: a protobuf Any of
    arrow.flight.protocol.sql.NAME with BODY (already encoded)."""
    url = f"type.googleapis.com/arrow.flight.protocol.sql.{name}".encode()
    return b"\x0a" + varint(len(url)) + url + b"\x12" + varint(len(body)) + body


def attempt(call):
    try:
        return {"ok": call()}
    except Exception as e:  # the driver's error, reported to the test
        return {"error": f"{type(e).__name__}: {e}"}


def cancel(uri, key, sql):
    client = flight.FlightClient(uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())] if key else [])
    body = sql.encode()
    descriptor = flight.FlightDescriptor.for_command(command("CommandStatementQuery", b"\x0a" + varint(len(body)) + body))

    def cancel_info(info):
        serialized = info.serialize()
        request = b"\x0a" + varint(len(serialized)) + serialized
        answers = list(client.do_action(flight.Action("CancelFlightInfo", request), options))
        # CancelFlightInfoResult.status (field 1): 1 is CANCELLED.
        return answers[0].body.to_pybytes().hex()

    out = {}
    info = client.get_flight_info(descriptor, options)
    read = {}

    def fetch():
        try:
            read["rows"] = client.do_get(info.endpoints[0].ticket, options).read_all().num_rows
        except Exception as e:  # the cancel's error, reported to the test
            read["error"] = f"{type(e).__name__}: {e}"

    reader = threading.Thread(target=fetch)
    reader.start()
    time.sleep(0.5)
    out["cancel_status"] = cancel_info(info)
    reader.join()
    out["running"] = read
    early = client.get_flight_info(descriptor, options)
    out["early_status"] = cancel_info(early)
    out["early"] = attempt(lambda: client.do_get(early.endpoints[0].ticket, options).read_all().num_rows)
    return out


def fields(message):
    """The length-delimited fields of a protobuf message, by number."""
    out, at = {}, 0
    while at < len(message):
        tag, at = read_varint(message, at)
        if tag & 7 == 0:
            _, at = read_varint(message, at)
            continue
        size, at = read_varint(message, at)
        out[tag >> 3] = message[at:at + size]
        at += size
    return out


def read_varint(data, at):
    n = shift = 0
    while True:
        byte = data[at]
        at += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return n, at


def owners(uri, key, other, sql):
    client = flight.FlightClient(uri)
    mine = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())])
    theirs = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {other}".encode())])
    body = sql.encode()
    request = command("ActionCreatePreparedStatementRequest", b"\x0a" + varint(len(body)) + body)
    answer = list(client.do_action(flight.Action("CreatePreparedStatement", request), mine))[0].body.to_pybytes()
    handle = fields(fields(answer)[2])[1]  # Any.value, then the result's handle
    query = command("CommandPreparedStatementQuery", b"\x0a" + varint(len(handle)) + handle)
    descriptor = flight.FlightDescriptor.for_command(query)

    def run(options):
        info = client.get_flight_info(descriptor, options)
        return client.do_get(info.endpoints[0].ticket, options).read_all().num_rows

    out = {"other_runs": attempt(lambda: run(theirs))}
    close = command("ActionClosePreparedStatementRequest", b"\x0a" + varint(len(handle)) + handle)
    list(client.do_action(flight.Action("ClosePreparedStatement", close), theirs))
    out["owner_runs"] = attempt(lambda: run(mine))
    return out


def sources(uri, key, sql):
    names = ["realtime", "hybrid", "historical"]
    conns = {s: connect(uri, key, {"x-k2-source": s}) for s in names}
    cursors = {s: conns[s].cursor() for s in names}
    try:
        return {s: attempt(lambda: (cursors[s].execute(sql), rows(cursors[s]))[1]) for s in names}
    finally:
        for s in names:
            cursors[s].close()
            conns[s].close()


def one(uri, key, sql, headers=None):
    with connect(uri, key, headers) as conn:
        with conn.cursor() as cur:
            return attempt(lambda: (cur.execute(sql), rows(cur))[1])


def tables(uri, key):
    with connect(uri, key) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        names = sorted(
            t["table_name"]
            for c in objects
            for s in c["catalog_db_schemas"] or []
            for t in s["db_schema_tables"] or []
        )
        return {name: [f"{f.name}:{f.type}" for f in conn.adbc_get_table_schema(name)] for name in names}


def stalled(uri, key, held, after, seconds):
    import time

    with connect(uri, key) as a, connect(uri, key) as b:
        cur = a.cursor()
        cur.execute(held)
        reader = cur.fetch_record_batch()
        reader.read_next_batch()
        time.sleep(seconds)
        with b.cursor() as other:
            return attempt(lambda: (other.execute(after), rows(other))[1])


def main():
    if sys.argv[3] == "--stalled":
        json.dump(stalled(sys.argv[1], sys.argv[2], sys.argv[4], sys.argv[5], float(sys.argv[6])), sys.stdout)
        return
    if sys.argv[3] == "--cancel":
        json.dump(cancel(sys.argv[1], sys.argv[2], sys.argv[4]), sys.stdout)
        return
    if sys.argv[3] == "--owners":
        json.dump(owners(sys.argv[1], sys.argv[2], sys.argv[4], sys.argv[5]), sys.stdout)
        return
    if sys.argv[3] == "--sources":
        json.dump(sources(sys.argv[1], sys.argv[2], sys.argv[4]), sys.stdout)
        return
    if sys.argv[3] == "--tables":
        json.dump(tables(sys.argv[1], sys.argv[2]), sys.stdout)
        return
    if sys.argv[3] == "--sql":
        headers = dict(a.split("=", 1) for a in sys.argv[5:])
        json.dump(one(sys.argv[1], sys.argv[2], sys.argv[4], headers), sys.stdout)
        return
    uri, key, symbol, snapshot = sys.argv[1:5]
    out = {}
    with connect(uri, key) as conn:
        info = conn.adbc_get_info()
        out["vendor"] = info.get("vendor_name")
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        out["objects"] = [
            {
                "catalog": c["catalog_name"],
                "schema": s["db_schema_name"],
                "table": t["table_name"],
                "type": t["table_type"],
            }
            for c in objects
            for s in c["catalog_db_schemas"] or []
            for t in s["db_schema_tables"] or []
        ]
        schema = conn.adbc_get_table_schema("trades")
        out["trades_schema"] = [f"{f.name}:{f.type}" for f in schema]

        def query(sql, parameters=None):
            with conn.cursor() as cur:
                cur.execute(sql, parameters)
                return rows(cur)

        out["per_symbol"] = attempt(
            lambda: query(
                "SELECT symbol, count(*) AS n, sum(price * quantity) AS notional, min(price) AS low "
                "FROM trades GROUP BY symbol ORDER BY symbol"
            )
        )
        out["prepared"] = attempt(
            lambda: query(
                "SELECT trade_id, price, quantity, timestamp FROM trades WHERE symbol = $1 "
                "ORDER BY timestamp, trade_id",
                (symbol,),
            )
        )
        out["prepared_limit"] = attempt(
            lambda: query("SELECT trade_id FROM trades WHERE symbol = $1 ORDER BY trade_id LIMIT $2", (symbol, 3))
        )
        out["prepared_qmark"] = attempt(
            lambda: query("SELECT trade_id FROM trades WHERE symbol = ? ORDER BY trade_id LIMIT ?", (symbol, 3))
        )
        out["insert"] = attempt(lambda: query("INSERT INTO trades (symbol) VALUES ('X')"))
        out["copy"] = attempt(lambda: query("COPY trades TO '/tmp/k2-flight-copy.parquet'"))
        out["file"] = attempt(lambda: query("SELECT * FROM '/etc/passwd'"))
        out["unknown_table"] = attempt(lambda: query("SELECT * FROM orders"))
        out["too_many_rows"] = attempt(lambda: query("SELECT trade_id FROM trades"))
        with conn.cursor() as cur:
            out["execute_schema"] = attempt(
                lambda: [f"{f.name}:{f.type}" for f in cur.adbc_execute_schema("SELECT symbol, quantity FROM trades")]
            )
        with conn.cursor() as cur:
            out["update"] = attempt(lambda: cur.executescript("DELETE FROM trades"))
    with connect(uri, key, {"x-k2-as-of-snapshot": snapshot}) as conn:
        with conn.cursor() as cur:
            out["as_of_snapshot"] = attempt(lambda: (cur.execute("SELECT count(*) AS n FROM trades"), rows(cur))[1])
    with connect(uri, key, {"x-k2-as-of": "not a time"}) as conn:
        with conn.cursor() as cur:
            out["bad_as_of"] = attempt(lambda: cur.execute("SELECT count(*) FROM trades"))
    with connect(uri, "") as conn:
        with conn.cursor() as cur:
            out["no_key"] = attempt(lambda: cur.execute("SELECT count(*) FROM trades"))

    # pyarrow's own Flight client: the key as a basic-auth password, then
    # GetTables through the token the handshake gave back.
    client = flight.FlightClient(uri)
    token = client.authenticate_basic_token("anyone", key)
    with_token = flight.FlightCallOptions(headers=[token])
    out["pyarrow_with_token"] = len(list(client.list_actions(with_token))) > 0

    def type_info(body=b""):
        descriptor = flight.FlightDescriptor.for_command(command("CommandGetXdbcTypeInfo", body))
        info = client.get_flight_info(descriptor, with_token)
        table = client.do_get(info.endpoints[0].ticket, with_token).read_all()
        return [[r["type_name"], r["data_type"], r["sql_data_type"]] for r in table.to_pylist()]

    out["xdbc_types"] = attempt(type_info)
    # CommandGetXdbcTypeInfo.data_type (field 1, int32) = -5, BIGINT.
    out["xdbc_bigint"] = attempt(lambda: type_info(b"\x08" + varint(-5)))

    # GetSchema: a statement's columns without running it (CommandStatementQuery.query is field 1).
    def schema_of(sql):
        body = sql.encode()
        descriptor = flight.FlightDescriptor.for_command(command("CommandStatementQuery", b"\x0a" + varint(len(body)) + body))
        return [f"{f.name}:{f.type}" for f in client.get_schema(descriptor, with_token).schema]

    out["get_schema"] = attempt(lambda: schema_of("SELECT trade_id, price, timestamp FROM trades LIMIT 1"))
    out["get_schema_insert"] = attempt(lambda: schema_of("INSERT INTO trades (symbol) VALUES ('X')"))
    try:
        list(flight.FlightClient(uri).list_actions())
        out["pyarrow_without_token"] = "accepted"
    except flight.FlightError as e:
        out["pyarrow_without_token"] = f"{type(e).__name__}: {e}"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
