#!/usr/bin/env python3
"""Decodes Confluent wire-format frames with fastavro, a reader K2 did not write.

Used by tests/interop_fastavro.rs to prove that K2's frames are plain Avro that
another implementation reads back, with the same values, using only the .avsc
files.

Input: a file of frames, each preceded by its length as 4 big-endian bytes.
Each frame is the Confluent wire format: magic byte 0, the schema id as 4
big-endian bytes, then one Avro datum (no container file, no sync markers).

    python3 decode_frames.py FRAMES --schema 7=schemas/trade_v2.avsc \\
                                    --schema 8=schemas/quote_v2.avsc

Output: one JSON object per frame, in input order, on its own line:

    {"schema_id": 7, "schema": "com.k2.marketdata.TradeV2", "record": {...}}

`record` holds every field of the schema, converted so that a comparison on
the other side is exact:

- decimal: a string, the exact value in plain notation (never an exponent,
  never a float), e.g. "0.00000001";
- timestamp-micros: an integer, microseconds since the Unix epoch, computed
  from fastavro's datetime with integer arithmetic;
- enum: its symbol; null: null; map: an object; array: a list.

Any frame that cannot be decoded (wrong magic byte, unknown schema id, bytes
left over after the datum, ...) is an error: the script exits non-zero and
says which frame.

Requires fastavro: python3 -m pip install -r tests/python/requirements.txt
"""

import argparse
import datetime
import decimal
import io
import json
import sys

try:
    import fastavro
except ImportError:
    sys.stderr.write(
        "decode_frames.py: the Python package fastavro is not installed; run\n"
        "    python3 -m pip install -r tests/python/requirements.txt\n"
    )
    sys.exit(3)

MAGIC = 0
HEADER_LEN = 5
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_MICRO = datetime.timedelta(microseconds=1)


class FrameError(Exception):
    pass


def read_frames(path):
    """Yields each frame of a file of u32-big-endian-length-prefixed frames."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise FrameError(f"{len(data) - pos} stray bytes at offset {pos}")
        n = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if len(data) - pos < n:
            raise FrameError(f"frame of {n} bytes at offset {pos} is truncated")
        yield data[pos : pos + n]
        pos += n


def plain_decimal(d):
    if not isinstance(d, decimal.Decimal) or not d.is_finite():
        raise FrameError(f"expected a finite decimal.Decimal, got {d!r}")
    # format 'f' never uses an exponent: Decimal('1E-8') -> '0.00000001'.
    return format(d, "f")


def micros(dt):
    if not isinstance(dt, datetime.datetime):
        raise FrameError(f"expected a datetime for timestamp-micros, got {dt!r}")
    if dt.tzinfo is None or dt.utcoffset() != datetime.timedelta(0):
        raise FrameError(f"timestamp-micros came back not in UTC: {dt!r}")
    # timedelta // timedelta is integer arithmetic: exact, no float involved.
    return (dt - EPOCH) // ONE_MICRO


# Records and enums by full name, for a field that names one defined earlier
# (the book schema's asks name the BookLevel its bids define).
NAMED = {}


def remember_names(schema, namespace=None):
    if isinstance(schema, list):
        for s in schema:
            remember_names(s, namespace)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") in ("record", "enum"):
        ns = schema.get("namespace", namespace)
        full = schema["name"] if "." in schema["name"] or not ns else f"{ns}.{schema['name']}"
        NAMED[full] = schema
        for f in schema.get("fields", []):
            remember_names(f["type"], ns)
    elif schema.get("type") == "array":
        remember_names(schema["items"], namespace)
    elif schema.get("type") == "map":
        remember_names(schema["values"], namespace)


def to_json(value, schema):
    """Converts a value fastavro decoded into JSON, guided by its schema."""
    if isinstance(schema, str) and schema in NAMED:
        schema = NAMED[schema]
    if isinstance(schema, list):  # union
        if value is None:
            if "null" not in schema:
                raise FrameError(f"null for a union without null: {schema!r}")
            return None
        branches = [s for s in schema if s != "null"]
        if len(branches) != 1:
            raise FrameError(f"union with several non-null branches: {schema!r}")
        return to_json(value, branches[0])
    if isinstance(schema, str):
        kind, logical = schema, None
    else:
        kind, logical = schema["type"], schema.get("logicalType")
    if logical == "decimal":
        return plain_decimal(value)
    if logical == "timestamp-micros":
        return micros(value)
    if logical is not None:
        raise FrameError(f"logical type {logical!r} is not handled here")
    if kind == "record":
        if not isinstance(value, dict):
            raise FrameError(f"expected a record, got {value!r}")
        names = [f["name"] for f in schema["fields"]]
        if sorted(value) != sorted(names):
            raise FrameError(f"record fields {sorted(value)} != schema {names}")
        return {f["name"]: to_json(value[f["name"]], f["type"]) for f in schema["fields"]}
    if kind == "enum":
        if value not in schema["symbols"]:
            raise FrameError(f"{value!r} is not a symbol of {schema['name']}")
        return value
    if kind == "array":
        return [to_json(v, schema["items"]) for v in value]
    if kind == "map":
        return {k: to_json(v, schema["values"]) for k, v in value.items()}
    if kind == "string":
        if not isinstance(value, str):
            raise FrameError(f"expected a string, got {value!r}")
        return value
    if kind in ("long", "int"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise FrameError(f"expected an integer, got {value!r}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise FrameError(f"expected a boolean, got {value!r}")
        return value
    if kind == "null":
        return None
    raise FrameError(f"type {kind!r} is not handled here")


def load_schema(path):
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    remember_names(raw)
    # fastavro decodes with its own parse; the raw JSON guides the conversion.
    return raw, fastavro.parse_schema(raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("frames", help="file of u32-BE-length-prefixed Confluent frames")
    ap.add_argument(
        "--schema",
        action="append",
        required=True,
        metavar="ID=PATH",
        help="a schema id and the .avsc file registered under it (repeatable)",
    )
    args = ap.parse_args()

    schemas = {}
    for spec in args.schema:
        sid, sep, path = spec.partition("=")
        if not sep or not sid.isdigit():
            ap.error(f"--schema wants ID=PATH, got {spec!r}")
        schemas[int(sid)] = load_schema(path)

    out = sys.stdout
    for i, frame in enumerate(read_frames(args.frames)):
        try:
            if len(frame) < HEADER_LEN:
                raise FrameError(f"{len(frame)} bytes is shorter than the header")
            if frame[0] != MAGIC:
                raise FrameError(f"magic byte is {frame[0]:#04x}, not 0x00")
            sid = int.from_bytes(frame[1:HEADER_LEN], "big")
            if sid not in schemas:
                raise FrameError(f"unknown schema id {sid}")
            raw, parsed = schemas[sid]
            datum = io.BytesIO(frame[HEADER_LEN:])
            record = fastavro.schemaless_reader(datum, parsed, None)
            left = len(frame) - HEADER_LEN - datum.tell()
            if left:
                raise FrameError(f"{left} bytes left over after the datum")
            line = {
                "schema_id": sid,
                "schema": parsed["name"],
                "record": to_json(record, raw),
            }
        except Exception as e:  # noqa: BLE001 - name the frame whatever failed
            sys.stderr.write(f"decode_frames.py: frame {i}: {type(e).__name__}: {e}\n")
            return 1
        # ensure_ascii keeps the output ASCII whatever the locale; JSON
        # escapes carry the unicode exactly.
        out.write(json.dumps(line, ensure_ascii=True) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
