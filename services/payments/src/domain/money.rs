//! Exact money: decimal amounts in major units, with each currency's number of decimals.

use std::fmt;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

/// The currencies accepted, with their ISO 4217 minor-unit digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Currency {
    Ugx,
    Rwf,
    Jpy,
    Usd,
    Eur,
    Gbp,
    Kes,
    Tzs,
    Ngn,
}

impl Currency {
    pub const ALL: [Self; 9] = [
        Self::Ugx,
        Self::Rwf,
        Self::Jpy,
        Self::Usd,
        Self::Eur,
        Self::Gbp,
        Self::Kes,
        Self::Tzs,
        Self::Ngn,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::Ugx => "UGX",
            Self::Rwf => "RWF",
            Self::Jpy => "JPY",
            Self::Usd => "USD",
            Self::Eur => "EUR",
            Self::Gbp => "GBP",
            Self::Kes => "KES",
            Self::Tzs => "TZS",
            Self::Ngn => "NGN",
        }
    }

    /// Digits after the decimal point an amount may have.
    pub fn decimals(self) -> u32 {
        match self {
            Self::Ugx | Self::Rwf | Self::Jpy => 0,
            _ => 2,
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.code() == raw)
            .ok_or_else(|| {
                let codes: Vec<_> = Self::ALL.iter().map(|c| c.code()).collect();
                format!("must be one of {}", codes.join(", "))
            })
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Largest accepted amount in major units: well inside NUMERIC(20, 2).
const MAX_WHOLE_DIGITS: usize = 15;
/// The largest whole amount, `10^MAX_WHOLE_DIGITS - 1`.
pub const MAX_WHOLE: u64 = 999_999_999_999_999;

/// A positive amount with no more decimals than its currency allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(Decimal);

impl Amount {
    /// Parses the JSON text of an amount as sent: a number (`12.5`) or a decimal string
    /// (`"12.50"`). Exponents, signs, `NaN`, separators and excess precision are refused rather
    /// than rounded.
    pub fn parse_json(raw: &RawValue, currency: Option<Currency>) -> Result<Self, String> {
        let text = raw.get().trim();
        let digits = if text.starts_with('"') {
            serde_json::from_str::<String>(text).map_err(|_| must_be_decimal())?
        } else {
            text.to_owned()
        };
        Self::parse(&digits, currency)
    }

    pub fn parse(digits: &str, currency: Option<Currency>) -> Result<Self, String> {
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || (digits.contains('.') && !all_digits(fraction)) {
            return Err(must_be_decimal());
        }
        if whole.trim_start_matches('0').len() > MAX_WHOLE_DIGITS {
            return Err(format!("must be less than 10^{MAX_WHOLE_DIGITS}"));
        }
        let significant_fraction = fraction.trim_end_matches('0');
        if let Some(currency) = currency {
            let allowed = currency.decimals() as usize;
            if significant_fraction.len() > allowed {
                return Err(format!(
                    "{currency} allows at most {allowed} decimal places"
                ));
            }
        }
        // Zeros that carry no value are dropped first: Decimal holds 28 digits, and
        // `000…0001.5000…0` is as exact an amount as `1.5`.
        let significant_whole = match whole.trim_start_matches('0') {
            "" => "0",
            digits => digits,
        };
        let exact = if significant_fraction.is_empty() {
            significant_whole.to_owned()
        } else {
            format!("{significant_whole}.{significant_fraction}")
        };
        let value = Decimal::from_str_exact(&exact).map_err(|_| must_be_decimal())?;
        if value.is_zero() {
            return Err("must be greater than 0".to_owned());
        }
        Ok(Self(value.normalize()))
    }

    /// A regular expression (ECMA-262, as JSON Schema has them) for exactly the decimal texts
    /// [`Amount::parse`] accepts for a currency with `decimals` digits after the point.
    pub fn pattern(decimals: u32) -> String {
        let n = decimals as usize;
        let whole = format!("0*[1-9][0-9]{{0,{}}}", MAX_WHOLE_DIGITS - 1);
        // After the point: up to `decimals` digits that count, then zeros only.
        let fraction = if n == 0 {
            r"(\.0+)?".to_owned()
        } else {
            format!(r"(\.[0-9]{{1,{n}}}0*)?")
        };
        let mut alternatives = vec![format!("{whole}{fraction}")];
        if n > 0 {
            // Below one: a digit that is not zero among the first `decimals`.
            let small: Vec<String> = (0..n)
                .map(|zeros| match n - 1 - zeros {
                    0 => format!("{}[1-9]", "0".repeat(zeros)),
                    more => format!("{}[1-9][0-9]{{0,{more}}}", "0".repeat(zeros)),
                })
                .collect();
            alternatives.push(format!(r"0+\.(?:{})0*", small.join("|")));
        }
        format!("^(?:{})$", alternatives.join("|"))
    }

    pub fn from_decimal(value: Decimal) -> Self {
        Self(value)
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    /// The amount as a decimal string with exactly the currency's decimals (`"12.50"`, `"10000"`).
    pub fn display(self, currency: Currency) -> String {
        let mut value = self.0;
        value.rescale(currency.decimals());
        value.to_string()
    }
}

fn must_be_decimal() -> String {
    "must be a positive decimal number such as 1500 or \"12.50\"".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn accepts_numbers_and_strings_exactly() {
        for (json, currency, shown) in [
            ("12.5", Currency::Usd, "12.50"),
            ("\"12.50\"", Currency::Usd, "12.50"),
            ("10000", Currency::Ugx, "10000"),
            ("\"10000.00\"", Currency::Ugx, "10000"),
            ("0.01", Currency::Eur, "0.01"),
            ("999999999999999.99", Currency::Usd, "999999999999999.99"),
            (
                "\"00000000094623640997321.000000000000000\"",
                Currency::Jpy,
                "94623640997321",
            ),
            (
                "\"0000000000000000000000000000012.5000000000000000000000000000000\"",
                Currency::Usd,
                "12.50",
            ),
        ] {
            let amount = Amount::parse_json(&raw(json), Some(currency)).unwrap();
            assert_eq!(amount.display(currency), shown, "{json}");
        }
    }

    #[test]
    fn the_pattern_accepts_exactly_what_parse_accepts() {
        let texts = [
            "1",
            "12",
            "012",
            "12.",
            ".5",
            "0",
            "00",
            "0.0",
            "0.5",
            "0.05",
            "0.005",
            "0.50",
            "00.010",
            "12.3",
            "12.30",
            "12.345",
            "12.3400",
            "100.0",
            "100.00",
            "1e2",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1_000",
            "1,5",
            "999999999999999",
            "0999999999999999",
            "1000000000000000",
            "999999999999999.99",
            "00000000094623640997321.000000000000000",
            "000000000000000000000000000000.0000000000000000000000000000005",
            "١٢",
        ];
        for currency in Currency::ALL {
            let pattern = regex::Regex::new(&Amount::pattern(currency.decimals())).unwrap();
            for text in texts {
                assert_eq!(
                    pattern.is_match(text),
                    Amount::parse(text, Some(currency)).is_ok(),
                    "{text:?} in {currency}"
                );
            }
        }
        assert_eq!(
            Amount::pattern(2),
            r"^(?:0*[1-9][0-9]{0,14}(\.[0-9]{1,2}0*)?|0+\.(?:[1-9][0-9]{0,1}|0[1-9])0*)$"
        );
    }

    #[test]
    fn refuses_anything_inexact_or_not_positive() {
        for (label, json, currency) in [
            ("too many decimals", "12.345", Currency::Usd),
            ("decimals for UGX", "100.5", Currency::Ugx),
            ("zero", "0", Currency::Usd),
            ("zero string", "\"0.00\"", Currency::Usd),
            ("negative", "-5", Currency::Usd),
            ("exponent", "1e2", Currency::Usd),
            ("exponent string", "\"1e2\"", Currency::Usd),
            ("underscore", "\"1_000\"", Currency::Usd),
            ("huge", "12345678901234567.89", Currency::Usd),
            ("NaN string", "\"NaN\"", Currency::Usd),
            ("empty", "\"\"", Currency::Usd),
            ("leading dot", "\".5\"", Currency::Usd),
            ("trailing dot", "\"5.\"", Currency::Usd),
            ("spaces", "\" 5\"", Currency::Usd),
            ("bool", "true", Currency::Usd),
            ("object", "{}", Currency::Usd),
        ] {
            assert!(
                Amount::parse_json(&raw(json), Some(currency)).is_err(),
                "{label} should be refused"
            );
        }
    }

    #[test]
    fn currency_codes_are_exact() {
        assert_eq!(Currency::parse("KES"), Ok(Currency::Kes));
        assert!(Currency::parse("kes").is_err());
        assert!(Currency::parse("XYZ").is_err());
    }
}
