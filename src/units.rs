//! Human units in configuration: durations (`50s`, `5m`, `1h30m`, `250ms`) and sizes (`4MiB`,
//! `512KiB`, `4MB`).

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

/// A byte size: a plain number of bytes, or a whole number with a unit. SI units mean powers of
/// ten (`kB`/`KB` 10^3, `MB` 10^6, `GB` 10^9), IEC units powers of two (`KiB` 2^10, `MiB` 2^20,
/// `GiB` 2^30; Kubernetes' `Ki`, `Mi`, `Gi` too). A bare `K`, `M` or `G` is refused: it meant
/// 2^20 to some and 10^6 to others, and a limit must not be a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// What a size looks like, for error messages.
const SIZE_EXAMPLES: &str = "write e.g. 4MiB (4 x 2^20 bytes), 4MB (4 x 10^6 bytes) or 4194304";

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
                "expected a whole number of bytes, or one with a unit (write e.g. 4MiB, 4MB)",
            ));
        }
        let n: u64 = t[..digits]
            .parse()
            .map_err(|_| UnitError::new(WHAT, s, "number too large"))?;
        let mult: u64 = match t[digits..].trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "Ki" | "KiB" => 1 << 10,
            "Mi" | "MiB" => 1 << 20,
            "Gi" | "GiB" => 1 << 30,
            "K" | "k" | "M" | "G" => {
                return Err(UnitError::new(
                    WHAT,
                    s,
                    "ambiguous unit: write KiB, MiB or GiB for powers of 2, kB, MB or GB for powers of 10",
                ))
            }
            unit if unit.starts_with('.') || unit.starts_with(',') => {
                return Err(UnitError::new(
                    WHAT,
                    s,
                    "whole numbers only (write 1536KiB rather than 1.5MiB)",
                ))
            }
            _ => {
                return Err(UnitError::new(
                    WHAT,
                    s,
                    "unknown unit (use B, kB, MB, GB for powers of 10 or KiB, MiB, GiB for powers of 2)",
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
        let units: [(u64, &str); 4] = [
            (1 << 20, "MiB"),
            (1_000_000, "MB"),
            (1 << 10, "KiB"),
            (1_000, "kB"),
        ];
        match units
            .into_iter()
            .find(|&(unit, _)| n >= unit && n.is_multiple_of(unit))
        {
            Some((unit, name)) => write!(f, "{}{name}", n / unit),
            None => write!(f, "{n}B"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A bare YAML integer is a byte count; a string carries a unit.
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a size ({SIZE_EXAMPLES})")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
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
        assert_eq!("100B".parse(), Ok(ByteSize(100)));
        assert!("4 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999999GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
    }

    #[test]
    fn si_units_are_powers_of_ten_and_iec_units_powers_of_two() {
        for (input, bytes) in [
            ("4MB", 4_000_000),
            ("4 MB", 4_000_000),
            ("512kB", 512_000),
            ("512KB", 512_000),
            ("1GB", 1_000_000_000),
            ("4MiB", 4 << 20),
            ("4Mi", 4 << 20),
            ("512KiB", 512 << 10),
            ("512Ki", 512 << 10),
            ("1GiB", 1 << 30),
            ("1Gi", 1 << 30),
        ] {
            assert_eq!(input.parse(), Ok(ByteSize(bytes)), "{input}");
        }
        assert_eq!(ByteSize(4_000_000).to_string(), "4MB");
        assert_eq!(ByteSize(100_000).to_string(), "100kB");
        assert_eq!(ByteSize(1536 << 10).to_string(), "1536KiB");
        assert_eq!(ByteSize(1001).to_string(), "1001B");
    }

    #[test]
    fn ambiguous_and_unknown_size_units_are_refused_with_a_hint() {
        for (input, hint) in [
            ("4M", "ambiguous unit"),
            ("4K", "ambiguous unit"),
            ("4k", "ambiguous unit"),
            ("1G", "ambiguous unit"),
            ("4mb", "unknown unit (use B, kB, MB, GB"),
            ("4Mb", "unknown unit"),
            ("4TB", "unknown unit"),
            ("1.5MiB", "whole numbers only"),
            ("lots", "expected a whole number of bytes"),
        ] {
            let err = input.parse::<ByteSize>().expect_err(input).to_string();
            assert!(err.contains(hint), "{input}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input}: {err}");
        }
    }
}
