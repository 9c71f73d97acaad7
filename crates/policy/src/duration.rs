//! Human-readable durations for configuration (`15m`, `12h`, `30d`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way an admin writes it: `90s`, `15m`, `12h`, `30d`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Builds one from whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    /// The duration in whole seconds.
    pub const fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(
                "expected a duration such as `15m`, `12h` or `30d`, got an empty string".into(),
            );
        }
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| {
                format!("expected a duration such as `90s`, `15m`, `12h` or `30d`, got `{s}` ({e})")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs.is_multiple_of(size) {
                return write!(f, "{}{unit}", secs / size);
            }
        }
        write!(f, "{secs}s")
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_units() {
        assert_eq!("15m".parse::<HumanDuration>().unwrap().as_secs(), 900);
        assert_eq!("12h".parse::<HumanDuration>().unwrap().as_secs(), 43_200);
        assert_eq!("30d".parse::<HumanDuration>().unwrap().as_secs(), 2_592_000);
        assert_eq!("1h 30m".parse::<HumanDuration>().unwrap().as_secs(), 5_400);
    }

    #[test]
    fn rejects_bare_numbers_and_words() {
        let err = "15".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("`15`"), "{err}");
        assert!("soon".parse::<HumanDuration>().is_err());
        assert!("".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn displays_in_largest_whole_unit() {
        assert_eq!(HumanDuration::from_secs(900).to_string(), "15m");
        assert_eq!(HumanDuration::from_secs(43_200).to_string(), "12h");
        assert_eq!(HumanDuration::from_secs(86_400 * 30).to_string(), "30d");
        assert_eq!(HumanDuration::from_secs(61).to_string(), "61s");
    }
}
