"""schemathesis hooks for the HTTP contract test (actors/tests/http_contract.rs).

OpenAPI 3.0 cannot say how query parameters constrain each other, and K2's
/v1 endpoints refuse (400, naming the parameter) what such constraints rule
out: `end` not later than `start`, `as_of` together with `as_of_snapshot`,
time travel with a source other than historical, more than 100,000 bars.
Generated queries are mended here to satisfy those rules, so that the
positive-data check holds K2 to accepting everything else the document
allows; a value the generator made invalid on purpose is left as it is, so
the negative-data check still sees it refused.
"""

from datetime import datetime, timezone

import schemathesis

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_MICROS = -62135596800000000
MAX_MICROS = 253402300799999999
BAR_MICROS = {"1m": 60_000_000, "5m": 300_000_000, "15m": 900_000_000, "1h": 3_600_000_000, "1d": 86_400_000_000}


def micros(value):
    """An instant as K2 reads it, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if MIN_MICROS <= value <= MAX_MICROS else None
    if isinstance(value, str):
        try:
            return micros(int(value))
        except ValueError:
            pass
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return None
        if t.tzinfo is None:
            return None
        d = t - EPOCH
        return micros((d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds)
    return None


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # Every phase's cases pass here (the coverage phase's are not drawn from
    # the strategies that map_query would change).
    if isinstance(case.query, dict):
        case.query = mend(case.query)
        if case.path.endswith("/top"):
            case.query = mend_top(case.query)


TOP_UNITS = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def top_interval(text):
    """A book top's interval as K2 reads it, in microseconds, or None."""
    if text is None:
        return 1_000_000
    if not isinstance(text, str):
        return None
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits == 0 or text[digits:] not in TOP_UNITS:
        return None
    us = int(text[:digits]) * TOP_UNITS[text[digits:]]
    return us if 100_000 <= us <= 86_400_000_000 else None


def mend_top(query):
    """At most 10,000 samples between start and end (end counts up to now
    at most)."""
    interval = query.get("interval")
    if isinstance(interval, str) and interval[:1].isdigit() and top_interval(interval) is None \
            and interval.lstrip("0123456789") in TOP_UNITS:
        # The pattern allows it; the range (100ms to 24h) does not.
        query["interval"] = interval = "1s"
    start, end = micros(query.get("start")), micros(query.get("end"))
    width = top_interval(interval)
    if start is None or end is None or width is None:
        return query
    now = int((datetime.now(timezone.utc) - EPOCH).total_seconds() * 1_000_000)
    last = min(end, now)
    if last >= start and (last - start) // width + 1 > 10_000:
        query["start"] = last - width * 1000
    return query


def mend(query):
    if "as_of" in query and "as_of_snapshot" in query:
        del query["as_of_snapshot"]
    if ("as_of" in query or "as_of_snapshot" in query) and query.get("source") in ("hybrid", "realtime"):
        query["source"] = "historical"
    start, end = micros(query.get("start")), micros(query.get("end"))
    if start is not None and end is not None:
        if end <= start:
            start, end = min(start, end), max(start, end)
            if start == end:
                if end < MAX_MICROS:
                    end += 1
                else:
                    start -= 1
        interval = query.get("interval")
        width = BAR_MICROS.get(interval) if isinstance(interval, str) else None
        if width is not None and (end - start + width - 1) // width + 1 > 100_000:
            if start + width * 1000 <= MAX_MICROS:
                end = start + width * 1000
            else:
                start = end - width * 1000
        query["start"], query["end"] = start, end
    return query
