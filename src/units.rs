//! Sizes and durations as people type them on the command line and in YAML.
//!
//! `--memory-hwm` takes a size (`64MiB`, `1GiB`, `512MB`; a bare number means
//! GiB, as Jina's `memory_hwm` did) and `--timeout-request` a duration (`500ms`,
//! `2s`, `1m`; a bare number means seconds).
//!
//! Every size and duration a person, a Flow file or a daemon request gives
//! comes through here, so the one cap on each is here too: [`MAX_SIZE`] and
//! [`MAX_DURATION`]. Past them a value is refused with a message, never turned
//! into a number that overflows later (`Instant::now() + duration` panics
//! past the clock's range; `10000000000000000000s` used to reach it).

use std::time::Duration;

const KIB: f64 = 1024.0;

/// The largest size accepted: 1 PiB. No limit of this host (memory, disk
/// quota, result bytes) means anything past it, and every byte count below
/// it fits a `u64` with room for sums.
pub const MAX_SIZE: u64 = 1 << 50;

/// The longest duration accepted: 365 days. A time limit, interval or lease
/// longer than a year is a mistake, and `now + MAX_DURATION` is far inside
/// every clock's range (`Instant`, tokio's timers, milliseconds since 1970 in
/// a `u64`).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Parses a byte size. Binary units (`KiB`, `MiB`, `GiB`, `TiB`, and the short
/// `K`, `M`, `G`, `T`), decimal units (`KB`, `MB`, `GB`, `TB`), `B`, or no unit (GiB).
///
/// # Errors
/// A message naming the input when it is empty, negative, not a number, has an
/// unknown unit, or is over [`MAX_SIZE`].
pub fn parse_size(input: &str) -> Result<u64, String> {
    let (number, unit) = split_number(input)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "g" | "gi" | "gib" => KIB * KIB * KIB,
        "b" => 1.0,
        "k" | "ki" | "kib" => KIB,
        "m" | "mi" | "mib" => KIB * KIB,
        "t" | "ti" | "tib" => KIB * KIB * KIB * KIB,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => {
            return Err(format!(
                "unknown size unit `{unit}` in `{input}` (use B, KiB, MiB, GiB, KB, MB, GB; a bare number means GiB)"
            ));
        }
    };
    let bytes = (number * scale).round();
    // Also refuses an infinity (a number too long for an f64).
    if bytes > MAX_SIZE as f64 {
        return Err(format!(
            "size `{input}` is over the largest this host accepts, {}",
            format_size(MAX_SIZE)
        ));
    }
    // In range and whole: the cast is exact.
    Ok(bytes as u64)
}

/// Parses a duration: `250us`, `500ms`, `2s`, `1.5s`, `2m`, `1h`, or a bare number
/// of seconds.
///
/// # Errors
/// A message naming the input when it is empty, negative, not a number, has an
/// unknown unit, or is over [`MAX_DURATION`].
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(input)?;
    let seconds = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => number,
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "m" | "min" | "mins" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit `{unit}` in `{input}` (use us, ms, s, m, h; a bare number means seconds)"
            ));
        }
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "duration `{input}` is over the longest this host accepts, 365 days"
        )),
    }
}

/// Jina's "no limit": `-1` where a time limit or a size limit is asked.
pub const NO_LIMIT: &str = "-1";

/// [`parse_duration`] for a time limit, where `-1` (Jina's "no limit") is
/// the longest duration accepted, [`MAX_DURATION`].
///
/// # Errors
/// As [`parse_duration`].
pub fn parse_limit_duration(input: &str) -> Result<Duration, String> {
    if input.trim() == NO_LIMIT {
        return Ok(MAX_DURATION);
    }
    parse_duration(input)
}

/// [`parse_size`] for a size limit, where `-1` (Jina's "no limit") is the
/// largest size accepted, [`MAX_SIZE`].
///
/// # Errors
/// As [`parse_size`].
pub fn parse_limit_size(input: &str) -> Result<u64, String> {
    if input.trim() == NO_LIMIT {
        return Ok(MAX_SIZE);
    }
    parse_size(input)
}

/// A bare number of 1000 or more given where a duration in seconds is read:
/// Jina read bare numbers of its timeouts as milliseconds (`timeout_ready:
/// 60000` was a minute, here it is almost 17 hours). The warning to print, or
/// `None`. `what` names the flag or key.
pub fn millisecond_warning(what: &str, input: &str) -> Option<String> {
    let input = input.trim();
    let seconds: f64 = input.parse().ok()?;
    (seconds >= 1000.0).then(|| {
        format!(
            "{what} `{input}` is read as {input} seconds ({}); Jina read bare numbers as milliseconds: write `{input}ms` if that is what you meant",
            humantime::format_duration(Duration::from_secs_f64(seconds.min(MAX_DURATION.as_secs_f64())))
        )
    })
}

/// A clap value parser for a time limit flag: [`parse_limit_duration`], with
/// [`millisecond_warning`] printed on stderr (clap runs before the log is set
/// up, so not through `tracing`).
///
/// # Errors
/// As [`parse_duration`].
pub fn limit_duration_flag(input: &str) -> Result<Duration, String> {
    let duration = parse_limit_duration(input)?;
    if let Some(warning) = millisecond_warning("a time limit", input) {
        eprintln!("warning: {warning}");
    }
    Ok(duration)
}

/// Formats a byte count for people: `64 MiB`, `1.5 GiB`, `2 TiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= KIB * KIB * KIB * KIB {
        trim_unit(b / (KIB * KIB * KIB * KIB), "TiB")
    } else if b >= KIB * KIB * KIB {
        trim_unit(b / (KIB * KIB * KIB), "GiB")
    } else if b >= KIB * KIB {
        trim_unit(b / (KIB * KIB), "MiB")
    } else if b >= KIB {
        trim_unit(b / KIB, "KiB")
    } else {
        format!("{bytes} B")
    }
}

fn trim_unit(value: f64, unit: &str) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

fn split_number(input: &str) -> Result<(f64, &str), String> {
    let trimmed = input.trim();
    let end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(end);
    if number.is_empty() {
        return Err(format!("`{input}` is not a number with an optional unit"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{input}` is not a number with an optional unit"))?;
    Ok((value, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2"), Ok(2 << 30));
        assert_eq!(parse_size("0.5"), Ok(512 << 20));
        assert_eq!(parse_size("512 MB"), Ok(512_000_000));
        assert_eq!(parse_size("10k"), Ok(10 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("-1GiB").is_err());
        assert!(parse_size("12 parsecs").unwrap_err().contains("parsecs"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn sizes_and_durations_past_the_cap_are_refused() {
        assert_eq!(parse_size("1024TiB"), Ok(MAX_SIZE));
        assert!(
            parse_size("1025TiB")
                .unwrap_err()
                .contains("over the largest this host accepts, 1024 TiB")
        );
        assert!(parse_size("99999999999999999999999").is_err());
        assert!(parse_size(&"9".repeat(400)).is_err());
        assert_eq!(
            parse_duration("365d").unwrap_err(),
            "unknown duration unit `d` in `365d` (use us, ms, s, m, h; a bare number means seconds)"
        );
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        let error = parse_duration("10000000000000000000s").unwrap_err();
        assert_eq!(
            error,
            "duration `10000000000000000000s` is over the longest this host accepts, 365 days"
        );
        assert!(parse_duration(&"9".repeat(400)).is_err());
        // The cap keeps deadlines computable.
        assert!(
            std::time::Instant::now()
                .checked_add(MAX_DURATION)
                .is_some()
        );
    }

    #[test]
    fn minus_one_is_no_limit_and_bare_milliseconds_are_noticed() {
        assert_eq!(parse_limit_duration("-1"), Ok(MAX_DURATION));
        assert_eq!(parse_limit_size(" -1 "), Ok(MAX_SIZE));
        assert_eq!(parse_limit_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_limit_duration("-2").is_err());
        let warning = millisecond_warning("timeout_ready", "60000").unwrap();
        assert!(
            warning.contains("16h 40m") && warning.contains("`60000ms`"),
            "{warning}"
        );
        assert_eq!(millisecond_warning("t", "999"), None);
        assert_eq!(millisecond_warning("t", "60000ms"), None);
        assert_eq!(millisecond_warning("t", "-1"), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
        assert_eq!(format_size(100), "100 B");
    }
}
