//! The shapes of Binance frames as serde reads them, borrowed from the frame.

use std::borrow::Cow;

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Every field any supported frame may have; unknown fields are skipped. `D` is
/// the nested payload for the combined-stream envelope, or nothing inside it.
#[derive(Deserialize)]
pub(super) struct Raw<'a, D> {
    // No `default` here: it would demand `D: Default`, and serde already reads
    // a missing `Option` field as `None`.
    pub(super) data: Option<D>,
    #[serde(borrow, default)]
    pub(super) e: Option<Text<'a>>,
    #[serde(rename = "E", default)]
    pub(super) event_time: Option<i64>,
    #[serde(borrow, default)]
    pub(super) s: Option<Text<'a>>,
    #[serde(default)]
    pub(super) t: Option<u64>,
    #[serde(borrow, default)]
    pub(super) p: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) q: Option<Text<'a>>,
    #[serde(rename = "T", default)]
    pub(super) trade_time: Option<i64>,
    #[serde(rename = "m", default)]
    pub(super) buyer_is_maker: Option<bool>,
    #[serde(rename = "M", default)]
    pub(super) best_match: Option<bool>,
    #[serde(default)]
    pub(super) u: Option<u64>,
    /// Best bid price in bookTicker; the buyer order id (a number) in old trades.
    #[serde(borrow, default)]
    pub(super) b: Option<StrOrNum<'a>>,
    #[serde(rename = "B", borrow, default)]
    pub(super) bid_qty: Option<Text<'a>>,
    /// Best ask price in bookTicker; the seller order id in old trades.
    #[serde(borrow, default)]
    pub(super) a: Option<StrOrNum<'a>>,
    #[serde(rename = "A", borrow, default)]
    pub(super) ask_qty: Option<Text<'a>>,
    #[serde(default)]
    pub(super) result: Option<IgnoredAny>,
    #[serde(borrow, default)]
    pub(super) id: Option<StrOrNum<'a>>,
    #[serde(default)]
    pub(super) code: Option<i64>,
    #[serde(borrow, default)]
    pub(super) msg: Option<Text<'a>>,
}

pub(super) type Payload<'a> = Raw<'a, IgnoredAny>;
pub(super) type Envelope<'a> = Raw<'a, Payload<'a>>;

impl<'a, D> Raw<'a, D> {
    /// No fields at all.
    pub(super) fn empty() -> Self {
        Self {
            data: None,
            e: None,
            event_time: None,
            s: None,
            t: None,
            p: None,
            q: None,
            trade_time: None,
            buyer_is_maker: None,
            best_match: None,
            u: None,
            b: None,
            bid_qty: None,
            a: None,
            ask_qty: None,
            result: None,
            id: None,
            code: None,
            msg: None,
        }
    }

    /// The same fields around other nested data.
    pub(super) fn with_data<E>(self, data: Option<E>) -> Raw<'a, E> {
        Raw {
            data,
            e: self.e,
            event_time: self.event_time,
            s: self.s,
            t: self.t,
            p: self.p,
            q: self.q,
            trade_time: self.trade_time,
            buyer_is_maker: self.buyer_is_maker,
            best_match: self.best_match,
            u: self.u,
            b: self.b,
            bid_qty: self.bid_qty,
            a: self.a,
            ask_qty: self.ask_qty,
            result: self.result,
            id: self.id,
            code: self.code,
            msg: self.msg,
        }
    }
}

/// A JSON string, borrowed from the frame unless it holds escapes.
///
/// serde borrows a bare `Cow<str>` field but not one inside an `Option`, which
/// would allocate for every field of every frame; this visitor borrows in both.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value that is a string in one message type and a number in another.
pub(super) enum StrOrNum<'a> {
    Str(Cow<'a, str>),
    Num(i128),
}

impl StrOrNum<'_> {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::Num(_) => None,
        }
    }

    pub(super) fn to_compact(&self) -> CompactString {
        match self {
            Self::Str(s) => CompactString::from(s.as_ref()),
            Self::Num(n) => CompactString::from(itoa::Buffer::new().format(*n)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrOrNum<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StrOrNum<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrNum::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrNum::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StrOrNum::Num(i128::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StrOrNum::Num(i128::from(v)))
            }
        }
        d.deserialize_any(V)
    }
}
