//! A fast path for the frames Binance actually sends: flat JSON objects (one
//! level of `data` nesting) whose strings have no escapes.
//!
//! serde's derived visitor for a 19-field struct spent about 5,000 instructions
//! per trade frame here; this scanner reads the same frame in a fraction of
//! that. It fills the very struct serde would, and it is only an accelerator:
//! on anything it does not handle exactly as serde_json would (escapes, nested
//! arrays, floats, duplicate keys, a type that does not match) it returns
//! `None` and the frame goes through serde, which then gives the real answer or
//! the real error. The tests check the two paths agree.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use super::raw::{Payload, Raw, StrOrNum, Text};

/// Reads `frame` into `top` (its own fields) and `inner` (its nested `data`
/// object, if any) exactly as serde would, and returns true; or returns false
/// to let serde read it (what was filled in is then to be dropped).
///
/// The structs are filled in place: they are large, and moving them through
/// return values cost more than the scanning itself.
pub(super) fn scan<'a>(frame: &'a [u8], top: &mut Payload<'a>, inner: &mut Option<Payload<'a>>) -> bool {
    // Validating the whole frame once lets every string inside it be borrowed
    // without its own check: a `"` never falls inside a multi-byte character.
    let Ok(text) = std::str::from_utf8(frame) else {
        return false;
    };
    let mut s = Scanner { b: text.as_bytes(), text, i: 0 };
    s.ws();
    if s.object(top, Some(inner)).is_none() {
        return false;
    }
    s.ws();
    s.i == s.b.len()
}

struct Scanner<'a> {
    b: &'a [u8],
    /// The same bytes, known to be UTF-8.
    text: &'a str,
    i: usize,
}

/// Marks a known key as seen. A second occurrence (even after a `null`) makes
/// serde fail with "duplicate field", so such frames are handed to serde.
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & (1 << bit) != 0 {
        return None;
    }
    *seen |= 1 << bit;
    Some(())
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// An object's fields into `raw`; `data` is where the top level puts its
    /// nested `data` object (`None` inside it, where `data` is not allowed).
    fn object(&mut self, raw: &mut Payload<'a>, mut data: Option<&mut Option<Payload<'a>>>) -> Option<()> {
        self.eat(b'{')?;
        let mut seen = 0u32;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            let null = self.null();
            match key.as_bytes() {
                b"data" if data.is_some() => {
                    once(&mut seen, 0)?;
                    if !null {
                        let mut nested = Raw::empty();
                        self.object(&mut nested, None)?;
                        **data.as_mut()? = Some(nested);
                    }
                }
                b"e" => {
                    once(&mut seen, 1)?;
                    raw.e = self.opt_text(null)?;
                }
                b"s" => {
                    once(&mut seen, 2)?;
                    raw.s = self.opt_text(null)?;
                }
                b"p" => {
                    once(&mut seen, 3)?;
                    raw.p = self.opt_text(null)?;
                }
                b"q" => {
                    once(&mut seen, 4)?;
                    raw.q = self.opt_text(null)?;
                }
                b"B" => {
                    once(&mut seen, 5)?;
                    raw.bid_qty = self.opt_text(null)?;
                }
                b"A" => {
                    once(&mut seen, 6)?;
                    raw.ask_qty = self.opt_text(null)?;
                }
                b"msg" => {
                    once(&mut seen, 7)?;
                    raw.msg = self.opt_text(null)?;
                }
                b"E" => {
                    once(&mut seen, 8)?;
                    raw.event_time = self.opt_int(null)?;
                }
                b"T" => {
                    once(&mut seen, 9)?;
                    raw.trade_time = self.opt_int(null)?;
                }
                b"code" => {
                    once(&mut seen, 10)?;
                    raw.code = self.opt_int(null)?;
                }
                b"t" => {
                    once(&mut seen, 11)?;
                    raw.t = self.opt_uint(null)?;
                }
                b"u" => {
                    once(&mut seen, 12)?;
                    raw.u = self.opt_uint(null)?;
                }
                b"m" => {
                    once(&mut seen, 13)?;
                    raw.buyer_is_maker = self.opt_bool(null)?;
                }
                b"M" => {
                    once(&mut seen, 14)?;
                    raw.best_match = self.opt_bool(null)?;
                }
                b"b" => {
                    once(&mut seen, 15)?;
                    raw.b = self.opt_str_or_num(null)?;
                }
                b"a" => {
                    once(&mut seen, 16)?;
                    raw.a = self.opt_str_or_num(null)?;
                }
                b"id" => {
                    once(&mut seen, 17)?;
                    raw.id = self.opt_str_or_num(null)?;
                }
                b"result" => {
                    once(&mut seen, 31)?;
                    raw.result = if null { None } else { self.skip_scalar().map(|()| Some(IgnoredAny))? };
                }
                // `data` inside `data`, and keys serde ignores: any scalar.
                b"data" => return None,
                _ if null => {}
                _ => self.skip_scalar()?,
            }
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Consumes `null` if it is next.
    fn null(&mut self) -> bool {
        let hit = self.b[self.i..].starts_with(b"null");
        if hit {
            self.i += 4;
        }
        hit
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let len = self.b[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        let end = start + len;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        self.text.get(start..end)
    }

    /// The digits of a JSON integer (`-?(0|[1-9][0-9]*)`), refusing floats.
    fn integer(&mut self) -> Option<&'a str> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let n = self.i - digits;
        let leading_zero = n > 1 && self.b[digits] == b'0';
        // serde_json reads `-0` as the float -0.0 (to keep its sign), which
        // no integer field accepts.
        let negative_zero = digits > start && n == 1 && self.b[digits] == b'0';
        if n == 0 || leading_zero || negative_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.text.get(start..self.i)
    }

    fn opt_text(&mut self, null: bool) -> Option<Option<Text<'a>>> {
        if null {
            return Some(None);
        }
        self.string().map(|s| Some(Text(Cow::Borrowed(s))))
    }

    fn opt_int(&mut self, null: bool) -> Option<Option<i64>> {
        if null {
            return Some(None);
        }
        self.integer()?.parse().ok().map(Some)
    }

    fn opt_uint(&mut self, null: bool) -> Option<Option<u64>> {
        if null {
            return Some(None);
        }
        self.integer()?.parse().ok().map(Some)
    }

    fn opt_bool(&mut self, null: bool) -> Option<Option<bool>> {
        if null {
            return Some(None);
        }
        let rest = &self.b[self.i..];
        let (v, n) = if rest.starts_with(b"true") {
            (true, 4)
        } else if rest.starts_with(b"false") {
            (false, 5)
        } else {
            return None;
        };
        self.i += n;
        Some(Some(v))
    }

    fn opt_str_or_num(&mut self, null: bool) -> Option<Option<StrOrNum<'a>>> {
        if null {
            return Some(None);
        }
        if self.peek()? == b'"' {
            return self.string().map(|s| Some(StrOrNum::Str(Cow::Borrowed(s))));
        }
        // serde_json hands integers beyond 64 bits to the visitor as floats,
        // which `StrOrNum` refuses: leave those to serde as well.
        let digits = self.integer()?;
        let n = digits.parse::<u64>().map(i128::from).or_else(|_| digits.parse::<i64>().map(i128::from)).ok()?;
        Some(Some(StrOrNum::Num(n)))
    }

    /// A string, integer, boolean (or, already consumed, null); anything else
    /// is left to serde.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' | b'f' => self.opt_bool(false).map(drop),
            _ => self.integer().map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Raw, scan};
    use crate::model::Timestamp;
    use crate::source::binance::{BinanceParser, decode_with_serde};

    /// Values a field may take, valid and not: the scanner must either agree
    /// with serde or step aside.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"BTCUSDT\"".to_owned()),
            Just("\"btcusdt\"".to_owned()),
            Just("\"60610.00000000\"".to_owned()),
            Just("\"0.00154000\"".to_owned()),
            Just("\"0.00000000\"".to_owned()),
            Just("\"trade\"".to_owned()),
            Just("\"bookTicker\"".to_owned()),
            Just("\"serverShutdown\"".to_owned()),
            Just("\"esc\\u0041ped\"".to_owned()),
            Just("\"\"".to_owned()),
            Just("\"ünïcode\"".to_owned()),
            Just("3718209179".to_owned()),
            Just("1722766102789".to_owned()),
            Just("-5".to_owned()),
            Just("0".to_owned()),
            Just("01".to_owned()),
            Just("1.5".to_owned()),
            Just("1e3".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
            Just("[1,2]".to_owned()),
            Just("{\"x\":1}".to_owned()),
            Just("tru".to_owned()),
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("e"),
            Just("E"),
            Just("s"),
            Just("t"),
            Just("p"),
            Just("q"),
            Just("T"),
            Just("m"),
            Just("M"),
            Just("u"),
            Just("b"),
            Just("B"),
            Just("a"),
            Just("A"),
            Just("result"),
            Just("id"),
            Just("code"),
            Just("msg"),
            Just("stream"),
            Just("unknown"),
        ]
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("\n\t ")]
    }

    fn object(fields: Vec<(&'static str, String, &'static str)>) -> String {
        let body: Vec<String> = fields.into_iter().map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}{w}")).collect();
        format!("{{{}}}", body.join(","))
    }

    /// A real trade or book ticker, with fields shuffled and some replaced.
    fn frame() -> impl Strategy<Value = String> {
        let real_trade: Vec<(&'static str, &'static str)> = vec![
            ("e", "\"trade\""),
            ("E", "1722766102790"),
            ("s", "\"BTCUSDT\""),
            ("t", "3718209179"),
            ("p", "\"60610.00000000\""),
            ("q", "\"0.00154000\""),
            ("T", "1722766102789"),
            ("m", "true"),
            ("M", "true"),
        ];
        let real_ticker: Vec<(&'static str, &'static str)> = vec![
            ("u", "400900217"),
            ("s", "\"BNBUSDT\""),
            ("b", "\"25.35190000\""),
            ("B", "\"31.21000000\""),
            ("a", "\"25.36520000\""),
            ("A", "\"40.66000000\""),
        ];
        (
            prop_oneof![Just(real_trade), Just(real_ticker)],
            proptest::collection::vec((key(), value()), 0..4),
            proptest::collection::vec(any::<proptest::sample::Index>(), 0..3),
            any::<proptest::sample::Index>(),
            proptest::collection::vec(ws(), 12),
            0..3u8,
        )
            .prop_map(|(base, extra, drop, rotate, spaces, envelope)| {
                let mut fields: Vec<(&'static str, String)> = base.iter().map(|(k, v)| (*k, v.to_string())).collect();
                for d in drop {
                    if !fields.is_empty() {
                        fields.remove(d.index(fields.len()));
                    }
                }
                for (k, v) in extra {
                    fields.push((k, v));
                }
                if !fields.is_empty() {
                    let r = rotate.index(fields.len());
                    fields.rotate_left(r);
                }
                let with_ws: Vec<_> =
                    fields.into_iter().enumerate().map(|(i, (k, v))| (k, v, spaces[i % spaces.len()])).collect();
                let inner = object(with_ws);
                match envelope {
                    0 => inner,
                    1 => format!("{{\"stream\":\"btcusdt@trade\",\"data\":{inner}}}"),
                    _ => format!(" {{ \"data\" : {inner} , \"stream\" : \"x\" }} "),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn scanner_agrees_with_serde_or_steps_aside(frame in frame()) {
            let received = Timestamp::from_micros(7);
            let mut parser = BinanceParser::default();
            let (mut top, mut inner) = (Raw::empty(), None);
            if scan(frame.as_bytes(), &mut top, &mut inner) {
                let slow = decode_with_serde(frame.as_bytes());
                prop_assert!(slow.is_ok(), "scanner accepted what serde refuses: {frame} ({:?})", slow.err());
                let slow = slow.unwrap();
                let fast = parser.payload(inner.unwrap_or(top), received);
                let slow = match slow.data { Some(d) => parser.payload(d, received), None => parser.payload(slow.with_data(None), received) };
                prop_assert_eq!(fast, slow, "{}", frame);
            }
        }
    }

    #[test]
    fn real_frames_take_the_fast_path() {
        for f in [
            r#"{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}"#,
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}}"#,
            r#"{"e":"trade","E":1688496453388,"s":"BTCUSDT","t":3163009968,"p":"30906.90000000","q":"0.00157000","b":21682983268,"a":21682984519,"T":1688496453388,"m":true,"M":true}"#,
            r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#,
            r#"{"result":null,"id":1}"#,
        ] {
            assert!(scan(f.as_bytes(), &mut Raw::empty(), &mut None), "{f}");
        }
        for f in [r#"{"s":"A\"B"}"#, r#"{"e":"trade","e":"trade"}"#, r#"{"result":[]}"#, r#"{"t":1.0}"#, "{} x"] {
            assert!(!scan(f.as_bytes(), &mut Raw::empty(), &mut None), "{f}");
        }
    }

    /// Found by the binance_frame fuzz target: the scanner read `-0` as the
    /// integer 0 where serde_json reads a float and refuses the frame.
    #[test]
    fn negative_zero_is_left_to_serde() {
        for f in [r#"{"result":null,"id":-0}"#, r#"{"e":"trade","T":-0}"#, r#"{"code":-0,"msg":"x"}"#] {
            assert!(!scan(f.as_bytes(), &mut Raw::empty(), &mut None), "{f}");
            let parsed = BinanceParser::default().parse(f.as_bytes(), Timestamp::from_micros(7));
            assert!(matches!(parsed, Err(crate::source::binance::BinanceError::Json(_))), "{f}: {parsed:?}");
        }
        assert!(scan(br#"{"result":null,"id":-1}"#, &mut Raw::empty(), &mut None));
    }
}
