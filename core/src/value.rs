//! Typed column values: what every source decodes into and every encoder and sink reads.
//!
//! Values stay exact: decimals keep their digits, unsigned 64-bit integers stay unsigned, times
//! keep microseconds, and the special values databases allow (NaN, ±infinity) have their own
//! variants instead of being squeezed into a neighbour. docs/types.md maps each source type here.

use std::fmt;

use bytes::Bytes;

/// Text of a value. Up to 24 bytes live inline (no allocation): most keys, codes, names and
/// decimals of a row.
pub type Text = compact_str::CompactString;

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt8(u8),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float32(f32),
    Float64(f64),
    Decimal(Decimal),
    Text(Text),
    Bytes(Bytes),
    Uuid([u8; 16]),
    /// JSON document as the source printed it.
    Json(String),
    Date(Date),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since midnight, and the zone offset east of UTC in seconds.
    TimeTz {
        micros: i64,
        offset_seconds: i32,
    },
    /// Wall-clock timestamp without zone.
    Timestamp(Timestamp),
    /// Instant, in UTC.
    TimestampTz(Timestamp),
    Interval(Interval),
    Array(Vec<Value>),
    /// Label of an enum (Postgres enum, MySQL ENUM).
    Enum(String),
    /// Labels of a MySQL SET.
    Set(Vec<String>),
    /// The source did not send this value (Postgres: an unchanged TOASTed column).
    Unavailable,
}

/// An exact decimal number, or one of the special values Postgres `numeric` allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decimal {
    /// Canonical text: optional '-', digits, optional '.' and digits; no exponent.
    Finite(Text),
    NaN,
    PositiveInfinity,
    NegativeInfinity,
}

/// Days since 1970-01-01 (proleptic Gregorian), or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Date {
    Days(i32),
    PositiveInfinity,
    NegativeInfinity,
}

/// Microseconds since 1970-01-01 00:00:00, or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    Micros(i64),
    PositiveInfinity,
    NegativeInfinity,
}

/// A Postgres-style interval: months, days and microseconds are kept apart because their
/// lengths differ (a month is not 30 days, a day is not always 24 hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Decimal {
    /// Parses a plain decimal (`-12.340`) or `NaN`/`Infinity`/`-Infinity`.
    pub fn parse(text: &str) -> Option<Decimal> {
        Decimal::special(text)
            .or_else(|| Decimal::is_plain(text).then(|| Decimal::Finite(text.into())))
    }

    fn special(text: &str) -> Option<Decimal> {
        match text {
            "NaN" => Some(Decimal::NaN),
            "Infinity" | "+Infinity" => Some(Decimal::PositiveInfinity),
            "-Infinity" => Some(Decimal::NegativeInfinity),
            _ => None,
        }
    }

    /// Optional '-', digits, optional '.' and digits.
    fn is_plain(text: &str) -> bool {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && !(digits.contains('.') && frac.is_empty())
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decimal::Finite(text) => f.write_str(text),
            Decimal::NaN => f.write_str("NaN"),
            Decimal::PositiveInfinity => f.write_str("Infinity"),
            Decimal::NegativeInfinity => f.write_str("-Infinity"),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 is 1 BC).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Writes `HH:MM:SS[.ffffff]` for microseconds since midnight (trailing zeros trimmed).
pub fn write_time_of_day(out: &mut String, micros: i64) {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    let frac = micros.rem_euclid(MICROS_PER_SECOND);
    push_two_digits(out, secs / 3600);
    out.push(':');
    push_two_digits(out, secs / 60 % 60);
    out.push(':');
    push_two_digits(out, secs % 60);
    write_fraction(out, frac);
}

/// Two decimal digits of `value` (0..=99; larger values print in full).
fn push_two_digits(out: &mut String, value: i64) {
    if (0..100).contains(&value) {
        out.push(char::from(b'0' + (value / 10) as u8));
        out.push(char::from(b'0' + (value % 10) as u8));
    } else {
        use fmt::Write;
        let _ = write!(out, "{value}");
    }
}

/// `.ffffff` without trailing zeros; nothing for a whole second.
fn write_fraction(out: &mut String, frac_micros: i64) {
    if frac_micros != 0 {
        let mut digits = [b'0'; 6];
        let mut rest = frac_micros;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let len = 6 - digits.iter().rev().take_while(|d| **d == b'0').count();
        out.push('.');
        out.extend(digits[..len].iter().map(|d| char::from(*d)));
    }
}

/// Writes an instant as ISO-8601 UTC: `2024-01-02T03:04:05.123456Z`.
pub fn write_utc_timestamp(out: &mut String, micros: i64) {
    use fmt::Write;
    let days = micros.div_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if (0..=9999).contains(&year) {
        push_two_digits(out, year / 100);
        push_two_digits(out, year % 100);
    } else {
        let _ = write!(out, "{year:+05}");
    }
    out.push('-');
    push_two_digits(out, i64::from(month));
    out.push('-');
    push_two_digits(out, i64::from(day));
    out.push('T');
    write_time_of_day(out, micros.rem_euclid(MICROS_PER_DAY));
    out.push('Z');
}

/// Parses what [`write_utc_timestamp`] writes (`2024-01-02T03:04:05.123456Z`, years outside
/// 0–9999 signed) back into microseconds since the epoch.
pub fn parse_utc_timestamp(text: &str) -> Option<i64> {
    parse_four_digit_year(text.as_bytes()).or_else(|| parse_any_utc_timestamp(text))
}

/// The usual form, `YYYY-MM-DDTHH:MM:SS[.f…]Z`, read by position without splitting or
/// allocating (decoders parse one per timestamp column of every change).
fn parse_four_digit_year(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hours, minutes, seconds) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let micros = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] => fraction_micros(fraction)?,
        _ => return None,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    Some(days * MICROS_PER_DAY + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros)
}

/// Any year, signed.
fn parse_any_utc_timestamp(text: &str) -> Option<i64> {
    let body = text.strip_suffix('Z')?;
    let (date, time) = body.split_once('T')?;
    let (sign, date) = match date.as_bytes().first()? {
        b'+' => (1, &date[1..]),
        b'-' => (-1, &date[1..]),
        _ => (1, date),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':');
    let hours: i64 = clock.next()?.parse().ok()?;
    let minutes: i64 = clock.next()?.parse().ok()?;
    let seconds: i64 = clock.next()?.parse().ok()?;
    let micros = fraction_micros(fraction.as_bytes())?;
    let days = days_from_civil(sign * year, month, day);
    Some(days * MICROS_PER_DAY + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros)
}

/// The number ASCII digits spell (None: a byte that is not a digit).
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

/// Microseconds of a second's fraction (`5` is 500,000; at most six digits).
fn fraction_micros(fraction: &[u8]) -> Option<i64> {
    if fraction.len() > 6 {
        return None;
    }
    Some(digits(fraction)? * 10i64.pow(6 - fraction.len() as u32))
}

/// Writes instants as ISO-8601 UTC, like `write_utc_timestamp`, straight into bytes, and
/// remembers the last date written: rows encoded together mostly share their day, and working
/// out a calendar date is most of the cost.
#[derive(Debug, Clone, Default)]
pub struct UtcTimestampWriter {
    /// The last day (days since the epoch) and its `YYYY-MM-DDT`.
    day: Option<(i64, [u8; 11])>,
}

/// Days since the epoch of 0000-01-01 and 10000-01-01: the years with four plain digits.
const FOUR_DIGIT_YEAR_DAYS: std::ops::Range<i64> = -719_528..2_932_897;

impl UtcTimestampWriter {
    pub fn write(&mut self, out: &mut Vec<u8>, micros: i64) {
        let days = micros.div_euclid(MICROS_PER_DAY);
        if !FOUR_DIGIT_YEAR_DAYS.contains(&days) {
            let mut text = String::new();
            write_utc_timestamp(&mut text, micros);
            out.extend_from_slice(text.as_bytes());
            return;
        }
        let date = match self.day {
            Some((day, date)) if day == days => date,
            _ => {
                let (year, month, day) = civil_from_days(days);
                let mut date = *b"0000-00-00T";
                let year = year as u32;
                two_digits(&mut date[0..2], year / 100);
                two_digits(&mut date[2..4], year % 100);
                two_digits(&mut date[5..7], month);
                two_digits(&mut date[8..10], day);
                self.day = Some((days, date));
                date
            }
        };
        // Date, time, fraction and zone are put together here and appended in one copy.
        let mut text = [0u8; 27];
        text[..11].copy_from_slice(&date);
        let of_day = micros.rem_euclid(MICROS_PER_DAY);
        let secs = (of_day / MICROS_PER_SECOND) as u32;
        two_digits(&mut text[11..13], secs / 3600);
        text[13] = b':';
        two_digits(&mut text[14..16], secs / 60 % 60);
        text[16] = b':';
        two_digits(&mut text[17..19], secs % 60);
        let mut len = 19;
        let frac = (of_day % MICROS_PER_SECOND) as u32;
        if frac != 0 {
            // Six digits, then the trailing zeros dropped.
            text[19] = b'.';
            two_digits(&mut text[20..22], frac / 10_000);
            two_digits(&mut text[22..24], frac / 100 % 100);
            two_digits(&mut text[24..26], frac % 100);
            len = 26;
            while text[len - 1] == b'0' {
                len -= 1;
            }
        }
        text[len] = b'Z';
        out.extend_from_slice(&text[..=len]);
    }
}

/// Two decimal digits of `value` (below 100) into `out[0..2]`.
fn two_digits(out: &mut [u8], value: u32) {
    out[0] = b'0' + (value / 10) as u8;
    out[1] = b'0' + (value % 10) as u8;
}

/// Writes a date the way SQL databases read it: `2024-01-02`, or `0044-03-15 BC` before year 1.
pub fn write_sql_date(out: &mut String, days: i64) {
    use fmt::Write;
    let (year, month, day) = civil_from_days(days);
    let (shown, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    let _ = write!(out, "{shown:04}-{month:02}-{day:02}");
    if bc {
        out.push_str(" BC");
    }
}

/// Writes a timestamp the way SQL databases read it: `2024-01-02 03:04:05.123456` (with ` BC`
/// before year 1).
pub fn write_sql_timestamp(out: &mut String, micros: i64) {
    use fmt::Write;
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let (shown, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    let _ = write!(out, "{shown:04}-{month:02}-{day:02} ");
    write_time_of_day(out, micros.rem_euclid(MICROS_PER_DAY));
    if bc {
        out.push_str(" BC");
    }
}

/// Writes a zone offset as `+hh:mm` (or `+hh:mm:ss` when it has seconds).
pub fn write_offset(out: &mut String, offset_seconds: i32) {
    use fmt::Write;
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let abs = offset_seconds.unsigned_abs();
    let _ = write!(out, "{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60);
    if !abs.is_multiple_of(60) {
        let _ = write!(out, ":{:02}", abs % 60);
    }
}

impl fmt::Display for Interval {
    /// ISO-8601 duration, as Postgres prints with IntervalStyle iso_8601: `P1Y2M3DT4H5M6.5S`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Interval::default() {
            return f.write_str("PT0S");
        }
        let mut out = String::from("P");
        use fmt::Write;
        let (years, months) = (self.months / 12, self.months % 12);
        if years != 0 {
            let _ = write!(out, "{years}Y");
        }
        if months != 0 {
            let _ = write!(out, "{months}M");
        }
        if self.days != 0 {
            let _ = write!(out, "{}D", self.days);
        }
        if self.micros != 0 {
            out.push('T');
            let negative = self.micros < 0;
            let abs = self.micros.unsigned_abs();
            let secs = abs / 1_000_000;
            let (hours, minutes, seconds, frac) =
                (secs / 3600, secs / 60 % 60, secs % 60, abs % 1_000_000);
            let sign = if negative { "-" } else { "" };
            if hours != 0 {
                let _ = write!(out, "{sign}{hours}H");
            }
            if minutes != 0 {
                let _ = write!(out, "{sign}{minutes}M");
            }
            if seconds != 0 || frac != 0 {
                let _ = write!(out, "{sign}{seconds}");
                write_fraction(&mut out, frac as i64);
                out.push('S');
            }
        }
        f.write_str(&out)
    }
}

/// Splits the parts of an ISO-8601 duration (`1Y-2M3D` of `P1Y-2M3DT…`) into
/// `[("1",'Y'), ("-2",'M'), ("3",'D')]`; None when a unit has no number or text trails.
pub fn iso_duration_parts(text: &str) -> Option<Vec<(&str, char)>> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_ascii_alphabetic() {
            if i == start {
                return None;
            }
            parts.push((&text[start..i], c));
            start = i + 1;
        }
    }
    (start == text.len()).then_some(parts)
}

/// Canonical text of a UUID: `8-4-4-4-12` lowercase hex.
/// Parses the canonical `8-4-4-4-12` hex form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    if text.len() != 36 {
        return None;
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    let mut digits = text.bytes().filter(|b| *b != b'-');
    for byte in &mut out {
        let high = hex(digits.next()?)?;
        let low = hex(digits.next()?)?;
        *byte = (high << 4) | low;
    }
    digits.next().is_none().then_some(out)
}

pub fn uuid_to_string(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble"));
        out.push(char::from_digit(u32::from(b & 0xf), 16).expect("nibble"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_across_eras() {
        for days in [
            -800_000i64,
            -719_468,
            -1,
            0,
            1,
            10_957,
            2_932_896,
            3_000_000,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
    }

    #[test]
    fn utc_timestamps_parse_back_to_the_micros_they_were_written_from() {
        for micros in [
            0i64,
            1,
            -1,
            1_559_033_904_863_123,
            -62_167_219_200_000_000,
            -62_198_755_200_000_001,
            253_402_300_800_000_000,
            86_399_999_999,
        ] {
            let mut text = String::new();
            write_utc_timestamp(&mut text, micros);
            assert_eq!(parse_utc_timestamp(&text), Some(micros), "{text}");
        }
        // Fractions of any length up to six digits, or none; the general path agrees.
        for (text, micros) in [
            ("2024-01-02T03:04:05Z", 1_704_164_645_000_000),
            ("2024-01-02T03:04:05.5Z", 1_704_164_645_500_000),
            ("2024-01-02T03:04:05.000120Z", 1_704_164_645_000_120),
            ("1969-12-31T23:59:59.999999Z", -1),
            ("+2024-01-02T03:04:05.5Z", 1_704_164_645_500_000),
        ] {
            assert_eq!(parse_utc_timestamp(text), Some(micros), "{text}");
            assert_eq!(parse_any_utc_timestamp(text), Some(micros), "{text}");
        }
        for garbage in [
            "",
            "2024-01-02",
            "2024-13-01T00:00:00Z",
            "2024-01-02T00:00:00.1234567Z",
            "2024-01-02T00:00:00.12a4Z",
            "2024-01-02T00:0x:00Z",
            "2024-01-02T00:00:00,5Z",
            "2024-01-32T00:00:00Z",
        ] {
            assert_eq!(parse_utc_timestamp(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn decimals_keep_their_digits_and_reject_garbage() {
        let forty = "1234567890123456789012345678901234567890.0123456789";
        assert_eq!(Decimal::parse(forty), Some(Decimal::Finite(forty.into())));
        assert_eq!(Decimal::parse("NaN"), Some(Decimal::NaN));
        assert_eq!(Decimal::parse("-Infinity"), Some(Decimal::NegativeInfinity));
        for bad in ["", "-", "1.", "1e5", "abc", "1.2.3"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn intervals_print_as_iso_8601() {
        let i = Interval {
            months: 14,
            days: 3,
            micros: (4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000,
        };
        assert_eq!(i.to_string(), "P1Y2M3DT4H5M6.5S");
        assert_eq!(Interval::default().to_string(), "PT0S");
        assert_eq!(
            Interval {
                months: 0,
                days: 0,
                micros: -1_000_000
            }
            .to_string(),
            "PT-1S"
        );
    }

    #[test]
    fn utc_timestamps_print_with_microseconds() {
        let mut out = String::new();
        write_utc_timestamp(&mut out, 1_704_164_645_123_456);
        assert_eq!(out, "2024-01-02T03:04:05.123456Z");
        out.clear();
        write_utc_timestamp(&mut out, -1);
        assert_eq!(out, "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn the_byte_writer_prints_timestamps_as_the_text_writer_does() {
        let mut writer = UtcTimestampWriter::default();
        let mut samples = vec![
            0,
            -1,
            1,
            1_704_164_645_123_456,
            1_704_164_645_000_000,
            1_704_164_645_100_000,
            MICROS_PER_DAY - 1,
            -MICROS_PER_DAY,
            // 0000-01-01 and the instant before it, 9999-12-31T23:59:59.999999 and after it.
            -719_528 * MICROS_PER_DAY,
            -719_528 * MICROS_PER_DAY - 1,
            2_932_897 * MICROS_PER_DAY - 1,
            2_932_897 * MICROS_PER_DAY,
            i64::MIN / 2,
            i64::MAX / 2,
        ];
        // A walk across days, months, years and leap days, revisiting the same day.
        let mut t = -3_000_000_000_000_000i64;
        while t < 3_000_000_000_000_000 {
            samples.push(t);
            samples.push(t + 7);
            t += 86_399_999_937_113;
        }
        for micros in samples {
            let mut expected = String::new();
            write_utc_timestamp(&mut expected, micros);
            let mut out = Vec::new();
            writer.write(&mut out, micros);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{micros}");
        }
    }

    #[test]
    fn uuids_print_canonically() {
        let bytes = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        assert_eq!(
            uuid_to_string(&bytes),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
    }
}
