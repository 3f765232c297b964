//! Splitting a crypto pair symbol into base and quote asset.

/// Quote assets K2 recognises at the end of a Binance symbol. When several
/// match, the longest wins (`BNBFDUSD` is FDUSD, not USD; `BTCTUSD` is TUSD).
/// Extend it with [`QuoteAssets::with_extra`] for venues that list more.
pub const DEFAULT_QUOTE_ASSETS: &[&str] = &[
    // Stablecoins.
    "USDT", "USDC", "FDUSD", "TUSD", "BUSD", "USDP", "DAI", "USD1", "PAX", // Crypto quote assets.
    "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE", "DOT", "SOL", // Fiat.
    "USD", "EUR", "GBP", "AUD", "TRY", "BRL", "JPY", "RUB", "UAH", "ZAR", "PLN", "RON", "ARS", "MXN", "COP", "CZK",
    "NGN", "IDR", "IDRT", "BIDR", "BKRW", "BVND",
];

/// The list of quote assets in use, longest first so the first match wins.
#[derive(Debug, Clone)]
pub struct QuoteAssets {
    longest_first: Vec<String>,
}

impl Default for QuoteAssets {
    fn default() -> Self {
        Self::with_extra(std::iter::empty::<&str>())
    }
}

impl QuoteAssets {
    /// The default list plus `extra` (upper-cased).
    pub fn with_extra<S: AsRef<str>>(extra: impl IntoIterator<Item = S>) -> Self {
        let mut all: Vec<String> = DEFAULT_QUOTE_ASSETS.iter().map(|s| s.to_string()).collect();
        all.extend(extra.into_iter().map(|s| s.as_ref().to_ascii_uppercase()));
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Self { longest_first: all }
    }

    /// The quote asset of an upper-case `symbol`, if one is known and leaves a
    /// non-empty base asset in front of it.
    pub fn quote_of<'s>(&self, symbol: &'s str) -> Option<&'s str> {
        self.longest_first
            .iter()
            .find(|q| symbol.len() > q.len() && symbol.ends_with(q.as_str()))
            .map(|q| &symbol[symbol.len() - q.len()..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_wins() {
        let q = QuoteAssets::default();
        assert_eq!(q.quote_of("BTCUSDT"), Some("USDT"));
        assert_eq!(q.quote_of("BNBFDUSD"), Some("FDUSD"));
        assert_eq!(q.quote_of("BTCTUSD"), Some("TUSD"));
        assert_eq!(q.quote_of("ETHBTC"), Some("BTC"));
        assert_eq!(q.quote_of("BTCEUR"), Some("EUR"));
        assert_eq!(q.quote_of("USDT"), None, "no base asset left");
        assert_eq!(q.quote_of("FOOBAR"), None);
        assert_eq!(QuoteAssets::with_extra(["bar"]).quote_of("FOOBAR"), Some("BAR"));
    }
}
