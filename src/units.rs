//! Human units in configuration: durations (`50s`, `5m`, `1h30m`, `250ms`) and sizes (`4MiB`, `512KiB`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A unit value that did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} {input:?}: {why}")]
pub struct UnitError {
    what: &'static str,
    input: String,
    why: &'static str,
}

impl UnitError {
    fn new(what: &'static str, input: &str, why: &'static str) -> Self {
        Self {
            what,
            input: input.to_owned(),
            why,
        }
    }
}

/// The longest duration accepted anywhere in the config.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration written as a sequence of number+unit pairs: `ms`, `s`, `m`, `h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "duration";
        let s = s.trim();
        if s.is_empty() {
            return Err(UnitError::new(WHAT, s, "empty (write e.g. 9s, 5m, 250ms)"));
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(UnitError::new(
                    WHAT,
                    s,
                    "expected a number (write e.g. 9s, 5m, 250ms)",
                ));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| UnitError::new(WHAT, s, "number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let part = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "" => return Err(UnitError::new(WHAT, s, "missing unit (ms, s, m or h)")),
                _ => return Err(UnitError::new(WHAT, s, "unknown unit (use ms, s, m or h)")),
            };
            total = total.saturating_add(part);
            rest = &rest[unit_len..];
        }
        // Deadlines and TTLs are added to clocks; a bound keeps that arithmetic far from overflow.
        if total > MAX_DURATION {
            return Err(UnitError::new(WHAT, s, "longer than 366 days"));
        }
        Ok(Self(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if !ms.is_multiple_of(60_000) || ms == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{}m", ms / 60_000)
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A byte size: a plain number of bytes, or with a unit `B`, `KiB`, `MiB`, `GiB` (also `K`/`KB`, `M`/`MB`: binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "size";
        let t = s.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(UnitError::new(
                WHAT,
                s,
                "expected a number (write e.g. 4MiB)",
            ));
        }
        let n: u64 = t[..digits]
            .parse()
            .map_err(|_| UnitError::new(WHAT, s, "number too large"))?;
        let mult: u64 = match t[digits..].trim() {
            "" | "B" => 1,
            "K" | "KB" | "KiB" => 1 << 10,
            "M" | "MB" | "MiB" => 1 << 20,
            "G" | "GB" | "GiB" => 1 << 30,
            _ => {
                return Err(UnitError::new(
                    WHAT,
                    s,
                    "unknown unit (use B, KiB, MiB or GiB)",
                ))
            }
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| UnitError::new(WHAT, s, "too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A bare YAML integer is a byte count; a string carries a unit.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("9s".parse(), Ok(HumanDuration(Duration::from_secs(9))));
        assert_eq!("5m".parse(), Ok(HumanDuration(Duration::from_secs(300))));
        assert_eq!(
            "1h30m".parse(),
            Ok(HumanDuration(Duration::from_secs(5400)))
        );
        assert_eq!(
            "250ms".parse(),
            Ok(HumanDuration(Duration::from_millis(250)))
        );
        assert!("9".parse::<HumanDuration>().is_err());
        assert!("9 days".parse::<HumanDuration>().is_err());
        assert!("".parse::<HumanDuration>().is_err());
        assert!("s".parse::<HumanDuration>().is_err());
        assert!("18446744073709551615s".parse::<HumanDuration>().is_err());
        assert!("9000h".parse::<HumanDuration>().is_err());
        assert_eq!(HumanDuration(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!("4MiB".parse(), Ok(ByteSize(4 << 20)));
        assert_eq!("512KiB".parse(), Ok(ByteSize(512 << 10)));
        assert_eq!("100".parse(), Ok(ByteSize(100)));
        assert!("4 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999999GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
    }
}
