//! How a staged rollout is asked for: its waves and its failure threshold, as the CLI writes them
//! (`--waves 1,10%,50%,100%`, `--max-failures 5%`) and as commands carry them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How far one wave reaches. Counts and percentages are cumulative: `1,10%,100%` is one device,
/// then up to a tenth of the target, then the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaveSize {
    /// This many devices of the target in total.
    Count(u32),
    /// This share of the target in total, rounded up.
    Percent(u8),
    /// The devices with all these labels not taken by an earlier wave.
    Selector(BTreeMap<String, String>),
    /// Every device not taken by an earlier wave.
    Rest,
    /// Simulated copies of the target's devices, not the devices themselves: only as the first
    /// wave. A rehearsal that fails stops the rollout before any real device is touched.
    Rehearsal,
}

/// How many devices of a wave may fail before the rollout stops and rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaxFailures {
    /// At most this many per wave.
    Count(u32),
    /// At most this share of each wave, rounded down.
    Percent(u8),
}

impl MaxFailures {
    /// The failures a wave of `devices` may have.
    pub fn allowed(self, devices: usize) -> usize {
        match self {
            Self::Count(n) => n as usize,
            Self::Percent(p) => devices * usize::from(p) / 100,
        }
    }
}

/// Why a wave or threshold text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

fn percent(text: &str) -> Result<Option<u8>, SpecError> {
    let Some(number) = text.strip_suffix('%') else {
        return Ok(None);
    };
    match number.trim().parse::<u8>() {
        Ok(p) if (1..=100).contains(&p) => Ok(Some(p)),
        _ => Err(SpecError(format!(
            "{text:?}: a percentage is a whole number from 1% to 100%"
        ))),
    }
}

impl FromStr for WaveSize {
    type Err = SpecError;

    /// `N`, `N%`, `rest`, or a selector `key=value[+key=value…]`.
    fn from_str(text: &str) -> Result<Self, SpecError> {
        let text = text.trim();
        if text == "rest" {
            return Ok(Self::Rest);
        }
        if text == "rehearsal" {
            return Ok(Self::Rehearsal);
        }
        if let Some(p) = percent(text)? {
            return Ok(Self::Percent(p));
        }
        if text.contains('=') {
            let mut labels = BTreeMap::new();
            for pair in text.split('+') {
                match pair.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                        labels.insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                    _ => {
                        return Err(SpecError(format!(
                            "{text:?}: a selector is key=value, joined by +"
                        )));
                    }
                }
            }
            return Ok(Self::Selector(labels));
        }
        match text.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Self::Count(n)),
            _ => Err(SpecError(format!(
                "{text:?}: a wave is a count (1), a percentage (10%), key=value, or rest"
            ))),
        }
    }
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
            Self::Rest => f.write_str("rest"),
            Self::Rehearsal => f.write_str("rehearsal"),
            Self::Selector(labels) => {
                let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                f.write_str(&pairs.join("+"))
            }
        }
    }
}

/// Parses comma-separated waves: `1,10%,50%,100%` or `ring=canary,rest`.
pub fn parse_waves(text: &str) -> Result<Vec<WaveSize>, SpecError> {
    if text.trim().is_empty() {
        return Err(SpecError("no waves given".into()));
    }
    text.split(',').map(str::parse).collect()
}

impl FromStr for MaxFailures {
    type Err = SpecError;

    /// `N` or `N%` (0 and 0% allowed: no failure tolerated).
    fn from_str(text: &str) -> Result<Self, SpecError> {
        let text = text.trim();
        if let Some(number) = text.strip_suffix('%') {
            return match number.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(Self::Percent(p)),
                _ => Err(SpecError(format!(
                    "{text:?}: a percentage is a whole number from 0% to 100%"
                ))),
            };
        }
        text.parse::<u32>().map(Self::Count).map_err(|_| {
            SpecError(format!(
                "{text:?}: max failures is a count (2) or a percentage (5%)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn wave_texts() {
        let cases: [(&str, Result<Vec<WaveSize>, ()>); 10] = [
            (
                "1,10%,50%,100%",
                Ok(vec![
                    WaveSize::Count(1),
                    WaveSize::Percent(10),
                    WaveSize::Percent(50),
                    WaveSize::Percent(100),
                ]),
            ),
            (
                "ring=canary, rest",
                Ok(vec![
                    WaveSize::Selector(labels(&[("ring", "canary")])),
                    WaveSize::Rest,
                ]),
            ),
            (
                "ring=canary+region=eu",
                Ok(vec![WaveSize::Selector(labels(&[
                    ("ring", "canary"),
                    ("region", "eu"),
                ]))]),
            ),
            ("101%", Err(())),
            ("0%", Err(())),
            ("0", Err(())),
            ("", Err(())),
            ("1,,100%", Err(())),
            ("=x", Err(())),
            ("ten", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_waves(text).map_err(|_| ()), expected, "{text:?}");
        }
    }

    #[test]
    fn waves_print_as_they_are_written() {
        let waves = parse_waves("1,10%,ring=canary+zone=a,rest").unwrap_or_default();
        let shown: Vec<String> = waves.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["1", "10%", "ring=canary+zone=a", "rest"]);
    }

    #[test]
    fn failure_thresholds() {
        let cases = [
            ("5%", Some(MaxFailures::Percent(5)), 40, 2),
            ("0%", Some(MaxFailures::Percent(0)), 40, 0),
            ("2", Some(MaxFailures::Count(2)), 40, 2),
            ("0", Some(MaxFailures::Count(0)), 1, 0),
            ("20%", Some(MaxFailures::Percent(20)), 4, 0),
            ("101%", None, 0, 0),
            ("-1", None, 0, 0),
            ("lots", None, 0, 0),
        ];
        for (text, expected, wave, allowed) in cases {
            let parsed = text.parse::<MaxFailures>().ok();
            assert_eq!(parsed, expected, "{text:?}");
            if let Some(threshold) = parsed {
                assert_eq!(threshold.allowed(wave), allowed, "{text:?} of {wave}");
            }
        }
    }
}
