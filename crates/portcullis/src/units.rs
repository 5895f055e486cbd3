//! Units operators write in the configuration and the API: durations (`900s`,
//! `15m`, `30d`) and rates (`5/1m`). They sit below everything that reads them.

use std::{str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way operators write it: `900s`, `15m`, `12h`, `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Shorthand for configuration defaults.
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 900s, 15m, 12h or 30d"))?;
        let mult = match unit {
            "ms" => return Ok(Self(Duration::from_millis(n))),
            "s" | "" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => {
                return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m, h or d)"));
            }
        };
        n.checked_mul(mult).map(|secs| Self(Duration::from_secs(secs))).ok_or_else(|| format!("`{s}` is too long"))
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = self.0.as_secs();
        match s {
            0 => write!(f, "0s"),
            s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Self::secs(s)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A limit such as `5/1m`: at most `max` attempts per sliding `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    /// Attempts allowed per window.
    pub max: u32,
    /// Window length.
    pub window: Duration,
}

impl FromStr for RateRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a rate like 5/1m (attempts/window)");
        let (max, window) = s.split_once('/').ok_or_else(bad)?;
        let max: u32 = max.trim().parse().map_err(|_| bad())?;
        let window: HumanDuration = window.trim().parse().map_err(|_| bad())?;
        if max == 0 || window.0 < Duration::from_secs(1) {
            return Err(format!("`{s}`: need at least 1 attempt per at least 1s"));
        }
        Ok(Self { max, window: window.0 })
    }
}

impl std::fmt::Display for RateRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.max, HumanDuration(self.window))
    }
}

impl Serialize for RateRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (text, secs) in [("900s", 900), ("15m", 900), ("2h", 7200), ("30d", 2_592_000), ("7", 7)] {
            let d: HumanDuration = text.parse().unwrap();
            assert_eq!(d.0.as_secs(), secs, "{text}");
        }
        assert_eq!(HumanDuration::secs(900).to_string(), "15m");
        assert_eq!("250ms".parse::<HumanDuration>().unwrap().0, Duration::from_millis(250));
        assert!("15x".parse::<HumanDuration>().is_err());
        assert!("m".parse::<HumanDuration>().is_err());
        assert!("99999999999999999999d".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn rules_parse() {
        assert_eq!("5/1m".parse::<RateRule>().unwrap(), RateRule { max: 5, window: Duration::from_secs(60) });
        assert_eq!("5/1m".parse::<RateRule>().unwrap().to_string(), "5/1m");
        for bad in ["5", "0/1m", "5/0s", "x/1m", "5/1x"] {
            assert!(bad.parse::<RateRule>().is_err(), "{bad}");
        }
    }
}
