//! Human-friendly quantities used in policy files: byte sizes ("128M") and durations ("10s").
//!
//! Both accept either a plain number or a string with a unit, so a policy can say `"memory": "128M"` or
//! `"memory": 134217728`. Parsing is strict: an unknown unit, a negative value or an overflow is an error
//! that says what was expected.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a size or duration string was refused: the value as written and the form expected
/// ([`SIZE_EXPECTED`] or [`DURATION_EXPECTED`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number followed by an optional unit.
    #[error("expected {expected}, found \"{value}\"")]
    Malformed {
        value: String,
        expected: &'static str,
    },
    /// A number too large for the quantity (a size over 2^64 bytes).
    #[error("expected {expected}, found \"{value}\" (too large)")]
    TooLarge {
        value: String,
        expected: &'static str,
    },
    /// A number with a unit this quantity does not know.
    #[error("expected {expected}, found \"{value}\" (unknown unit \"{unit}\")")]
    UnknownUnit {
        value: String,
        unit: String,
        expected: &'static str,
    },
}

/// A number of bytes. Written as an integer (bytes) or a string with a binary unit:
/// `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (all powers of 1024), e.g. `"128M"`.
///
/// ```
/// use hybox::units::Size;
/// assert_eq!("128M".parse::<Size>().unwrap().bytes(), 128 << 20);
/// assert_eq!("4096".parse::<Size>().unwrap().bytes(), 4096);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    pub const fn bytes(self) -> u64 {
        self.0
    }
    pub const fn mib(n: u64) -> Size {
        Size(n << 20)
    }
    pub const fn kib(n: u64) -> Size {
        Size(n << 10)
    }
}

/// What a size string must look like; shared by the parser's errors and the JSON schema.
pub const SIZE_EXPECTED: &str =
    "a byte count: an integer, or a string like \"512K\", \"128M\", \"2G\"";

impl FromStr for Size {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let too_large = || UnitError::TooLarge {
            value: s.to_string(),
            expected: SIZE_EXPECTED,
        };
        if num.is_empty() {
            return Err(UnitError::Malformed {
                value: s.to_string(),
                expected: SIZE_EXPECTED,
            });
        }
        // Only digits are left: the one way this parse fails is overflow.
        let n: u64 = num.parse().map_err(|_| too_large())?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "k" | "KiB" | "KB" => 10,
            "M" | "m" | "MiB" | "MB" => 20,
            "G" | "g" | "GiB" | "GB" => 30,
            "T" | "t" | "TiB" | "TB" => 40,
            _ => {
                return Err(UnitError::UnknownUnit {
                    value: s.to_string(),
                    unit: unit.trim().to_string(),
                    expected: SIZE_EXPECTED,
                })
            }
        };
        n.checked_mul(1u64 << shift).map(Size).ok_or_else(too_large)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if b != 0 && b.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{}", b >> shift, unit);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": SIZE_EXPECTED,
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+\\s*(B|[KkMmGgTt]|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$"}
            ]
        })
    }
}

/// A duration. Written as a number of seconds (`2.5`) or a string with a unit: `ms`, `s`, `m`, `h`
/// (`"500ms"`, `"10s"`, `"2m"`).
///
/// ```
/// use hybox::units::Duration;
/// assert_eq!("1.5s".parse::<Duration>().unwrap().as_std().as_millis(), 1500);
/// assert_eq!("250ms".parse::<Duration>().unwrap().as_std().as_millis(), 250);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// What a duration must look like.
pub const DURATION_EXPECTED: &str =
    "a duration: seconds as a number, or a string like \"500ms\", \"10s\", \"2m\"";

impl Duration {
    pub const fn from_secs(s: u64) -> Duration {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Duration {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }
    fn from_secs_f64(v: f64) -> Option<Duration> {
        (v.is_finite() && (0.0..1e12).contains(&v))
            .then(|| Duration(std::time::Duration::from_secs_f64(v)))
    }
}

impl FromStr for Duration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || UnitError::Malformed {
            value: s.to_string(),
            expected: DURATION_EXPECTED,
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => n / 1e3,
            "us" => n / 1e6,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        Duration::from_secs_f64(secs).ok_or_else(bad)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !self.0.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}us", self.0.as_micros())
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Duration::from_secs_f64(v)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": DURATION_EXPECTED,
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?\\s*(us|ms|s|m|min|h)?$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("0".parse::<Size>().unwrap(), Size(0));
        assert_eq!("64K".parse::<Size>().unwrap(), Size(65536));
        assert_eq!("2GiB".parse::<Size>().unwrap(), Size(2 << 30));
        assert_eq!("1 M".parse::<Size>().unwrap(), Size(1 << 20));
        assert!("12Q"
            .parse::<Size>()
            .unwrap_err()
            .to_string()
            .contains("unknown unit \"Q\""));
        assert!("M".parse::<Size>().is_err());
        assert!("-1".parse::<Size>().is_err());
        assert!("99999999999999T"
            .parse::<Size>()
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn sizes_display_round_trip() {
        for s in ["128M", "1G", "100", "3K"] {
            assert_eq!(s.parse::<Size>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!("10s".parse::<Duration>().unwrap(), Duration::from_secs(10));
        assert_eq!("2m".parse::<Duration>().unwrap(), Duration::from_secs(120));
        assert_eq!(
            "0.5".parse::<Duration>().unwrap(),
            Duration::from_millis(500)
        );
        assert!("ten".parse::<Duration>().is_err());
        assert!("5 parsecs".parse::<Duration>().is_err());
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_secs(3).to_string(), "3s");
    }
}
