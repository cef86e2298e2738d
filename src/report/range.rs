//! The two time ranges a report compares: given as `START..END` (each RFC 3339, Unix seconds,
//! `now`, or `now-30m`/`-30m`), or around a change (`--change TIME --window 30m`, with an
//! optional `--settle` skipped after it while caches warm and backlogs drain).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A closed time range in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Range {
    pub start: f64,
    pub end: f64,
}

impl Range {
    pub fn seconds(&self) -> f64 {
        self.end - self.start
    }

    /// RFC 3339 (UTC, seconds) of both ends, for the outputs.
    pub fn display(&self) -> String {
        format!("{} .. {}", rfc3339(self.start), rfc3339(self.end))
    }
}

pub fn rfc3339(unix: f64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(time).to_string()
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One point in time, relative to `now` (Unix seconds) when it says so.
pub fn parse_time(text: &str, now: f64) -> Result<f64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    let relative = text.strip_prefix("now-").or_else(|| text.strip_prefix('-'));
    if let Some(ago) = relative {
        let ago =
            humantime::parse_duration(ago).map_err(|e| format!("{text:?}: {e} (e.g. now-30m)"))?;
        return Ok(now - ago.as_secs_f64());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        })
        .map_err(|_| {
            format!(
                "{text:?} is not a time: use RFC 3339 (2026-12-05T08:00:00Z), Unix seconds, now, \
                 or now-DURATION (now-30m)"
            )
        })
}

/// `START..END`.
pub fn parse_range(flag: &str, text: &str, now: f64) -> Result<Range, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("{flag} {text:?}: expected START..END, e.g. now-2h..now-1h"))?;
    let range = Range {
        start: parse_time(start, now).map_err(|e| format!("{flag}: {e}"))?,
        end: parse_time(end, now).map_err(|e| format!("{flag}: {e}"))?,
    };
    check(flag, range, now)
}

/// The ranges around a change: `window` before it, and `window` after it once `settle` passed.
pub fn around_change(
    change: f64,
    window: Duration,
    settle: Duration,
    now: f64,
) -> Result<(Range, Range), String> {
    let window = window.as_secs_f64();
    let after_start = change + settle.as_secs_f64();
    let before = Range {
        start: change - window,
        end: change,
    };
    let after = Range {
        start: after_start,
        end: after_start + window,
    };
    Ok((
        check("--change/--window (before)", before, now)?,
        check("--change/--window/--settle (after)", after, now)?,
    ))
}

fn check(flag: &str, range: Range, now: f64) -> Result<Range, String> {
    if range.end <= range.start {
        return Err(format!(
            "{flag}: the range ends ({}) before it starts ({})",
            rfc3339(range.end),
            rfc3339(range.start)
        ));
    }
    // A few seconds of slack for "now" read twice.
    if range.end > now + 5.0 {
        return Err(format!(
            "{flag}: the range ends in the future ({}); wait until then or shorten it",
            rfc3339(range.end)
        ));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    #[test]
    fn times_absolute_relative_and_unix() {
        assert_eq!(parse_time("now", NOW), Ok(NOW));
        assert_eq!(parse_time("now-30m", NOW), Ok(NOW - 1800.0));
        assert_eq!(parse_time("-1h", NOW), Ok(NOW - 3600.0));
        assert_eq!(parse_time("1700000000", NOW), Ok(1_700_000_000.0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", NOW), Ok(1_700_000_000.0));
        assert!(parse_time("yesterday", NOW)
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn ranges_are_checked() {
        let range = parse_range("--before", "now-2h..now-1h", NOW).unwrap();
        assert_eq!(range.seconds(), 3600.0);
        assert!(parse_range("--before", "now-1h", NOW)
            .unwrap_err()
            .contains("START..END"));
        assert!(parse_range("--after", "now-1h..now-2h", NOW)
            .unwrap_err()
            .contains("before it starts"));
        assert!(parse_range("--after", "now..now+1h", NOW).is_err());
        let (before, after) = around_change(
            NOW - 3600.0,
            Duration::from_secs(1200),
            Duration::from_secs(60),
            NOW,
        )
        .unwrap();
        assert_eq!((before.start, before.end), (NOW - 4800.0, NOW - 3600.0));
        assert_eq!((after.start, after.end), (NOW - 3540.0, NOW - 2340.0));
        assert!(
            around_change(NOW - 60.0, Duration::from_secs(600), Duration::ZERO, NOW)
                .unwrap_err()
                .contains("future")
        );
    }
}
