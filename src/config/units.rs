//! Human-written quantities in `migration.toml`: durations (`"5s"`, `"120h"`) and sizes
//! (`"64MiB"`).
//!
//! Parsing is delegated to `jiff` (durations) and `bytesize` (sizes); these newtypes add the
//! messages a user needs when a value is wrong, a stable written form for defaults in the schema,
//! and schema descriptions.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as text: `"30s"`, `"5m"`, `"1h 30m"`, `"120h"` or ISO 8601 (`"PT2M"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Builds a duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // jiff parses the "friendly" format (`1h 30m`, `120h`) and ISO 8601 durations.
        let parsed: jiff::SignedDuration = s.trim().parse().map_err(|_| {
            format!(
                "invalid duration {s:?}: write a number with a unit, such as \"30s\", \"5m\" or \"120h\""
            )
        })?;
        Duration::try_from(parsed)
            .map(Self)
            .map_err(|_| format!("invalid duration {s:?}: durations cannot be negative"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::SignedDuration::try_from(self.0) {
            Ok(d) => write!(f, "{d:#}"),
            Err(_) => write!(f, "{}s", self.0.as_secs()),
        }
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`), e.g. \"30s\", \"1h 30m\", \"120h\", or ISO 8601 (\"PT2M\").",
            "examples": ["5s", "10m", "120h"]
        })
    }
}

/// A size in bytes written as text: `"64MiB"`, `"8 MiB"`, `"1.5 GB"`, or a plain integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Self(b.as_u64()))
            .map_err(|_| {
                format!("invalid size {s:?}; write a number with a unit, such as \"64MiB\", \"512KiB\" or \"1GiB\"")
            })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exact binary units when the value has one, so defaults read as they are written.
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (factor, unit) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a size such as \"64MiB\" or a number of bytes")
        })? {
            Raw::Bytes(n) => Ok(Self(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "integer"],
            "minimum": 0,
            "description": "A size: a number with a unit (`B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`), e.g. \"64MiB\", or a number of bytes.",
            "examples": ["64MiB", "8MiB"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_the_friendly_form() {
        let d: HumanDuration = "120h".parse().unwrap();
        assert_eq!(d.get(), Duration::from_secs(120 * 3600));
        assert_eq!(d.to_string(), "120h");
        assert_eq!(
            "1m 30s".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(90)
        );
        assert_eq!(
            "PT2M".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(120)
        );
        assert_eq!(HumanDuration::from_secs(5).to_string(), "5s");
        let err = "5 parsecs".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("\"30s\""), "{err}");
        assert!(
            "-5s"
                .parse::<HumanDuration>()
                .unwrap_err()
                .contains("negative")
        );
    }

    #[test]
    fn sizes_parse_units_and_print_exactly() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(64));
        assert_eq!("1.5 GB".parse::<ByteSize>().unwrap().bytes(), 1_500_000_000);
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert!("many".parse::<ByteSize>().is_err());
    }
}
