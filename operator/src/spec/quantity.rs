//! Kubernetes resource quantities for byte sizes (`512Mi`, `1.5Gi`, `256M`, `1000000`): pure parsing for
//! `resources.memory` and `tmpfs[].size`.

/// Binary and decimal suffixes and their multipliers.
const SUFFIXES: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Why a quantity does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Empty text.
    #[error("it is empty")]
    Empty,
    /// The number part is not a decimal number.
    #[error("\"{0}\" is not a number")]
    NotANumber(String),
    /// The suffix is not one of Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E.
    #[error("unknown unit \"{0}\" (use Ki, Mi, Gi, Ti or k, M, G, T; units are case-sensitive)")]
    Unit(String),
    /// More than 2^63 - 1 bytes.
    #[error("it is too large")]
    TooLarge,
}

/// Parses a byte quantity; fractions are rounded up to whole bytes (`0.5Ki` = 512).
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(QuantityError::Empty);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier = if unit.is_empty() {
        1
    } else {
        SUFFIXES
            .iter()
            .find(|(s, _)| *s == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| QuantityError::Unit(unit.to_owned()))?
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_ok(whole) || !digits_ok(frac) {
        return Err(QuantityError::NotANumber(number.to_owned()));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| QuantityError::TooLarge)?
    };
    let mut bytes = whole
        .checked_mul(u128::from(multiplier))
        .ok_or(QuantityError::TooLarge)?;
    if !frac.is_empty() {
        let frac = frac.get(..18).unwrap_or(frac);
        let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(18));
        let f: u128 = frac.parse().map_err(|_| QuantityError::TooLarge)?;
        bytes += (f * u128::from(multiplier)).div_ceil(scale);
    }
    u64::try_from(bytes)
        .ok()
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or(QuantityError::TooLarge)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (text, bytes) in [
            ("512Mi", 512 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("64Ki", 64 << 10),
            ("256M", 256_000_000),
            ("2G", 2_000_000_000),
            ("10k", 10_000),
            ("1000000", 1_000_000),
            ("0.5Ki", 512),
            (" 7 ", 7),
            ("1Ti", 1 << 40),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_quantities() {
        assert_eq!(parse_bytes(""), Err(QuantityError::Empty));
        assert_eq!(parse_bytes("512mb"), Err(QuantityError::Unit("mb".into())));
        assert_eq!(parse_bytes("512m"), Err(QuantityError::Unit("m".into())));
        assert_eq!(parse_bytes("1KI"), Err(QuantityError::Unit("KI".into())));
        assert_eq!(
            parse_bytes("Mi"),
            Err(QuantityError::NotANumber(String::new()))
        );
        assert_eq!(
            parse_bytes("1.2.3Mi"),
            Err(QuantityError::NotANumber("1.2.3".into()))
        );
        assert_eq!(parse_bytes("-1Mi"), Err(QuantityError::Unit("-1Mi".into())));
        assert_eq!(parse_bytes("9Ei"), Err(QuantityError::TooLarge));
        assert_eq!(
            parse_bytes("99999999999999999999999999999999999999999"),
            Err(QuantityError::TooLarge)
        );
    }
}
