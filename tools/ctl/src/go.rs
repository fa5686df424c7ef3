//! Go's formatting and parsing conventions, which etcdctl's output and error messages are
//! made of: `%q` quoting, `time.Duration` printing and parsing, `strconv` number parsing and
//! its error texts, string unquoting, and go-humanize's byte sizes.
//!
//! Only what kvctl prints or parses is here, written to give byte-identical results.

use std::fmt::Write as _;
use std::time::Duration;

/// Quotes `bytes` the way Go's `strconv.Quote` (and `fmt`'s `%q`) does: a double-quoted
/// string with Go escapes, printable Unicode kept as is, invalid UTF-8 bytes as `\xNN`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_quoted_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn push_quoted_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        c if is_print(c) => out.push(c),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `unicode.IsPrint`: graphic characters and the ASCII space.
/// Exact for ASCII; for the rest it excludes controls, non-ASCII spaces, private use and
/// the common format characters, which is what keys and values in practice contain.
fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let u = c as u32;
    let format_or_private = matches!(
        u,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x180e
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x206f
            | 0xe000..=0xf8ff
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xf0000..
    );
    !c.is_control() && !c.is_whitespace() && !format_or_private
}

/// Formats a duration the way Go's `time.Duration.String` does: `1.904781ms`, `850µs`,
/// `5.001077291s`, `1m30s`, `0s`.
pub fn duration(d: Duration) -> String {
    let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        // Below a second: one unit, with a fraction.
        let (unit, prec) = if nanos < 1_000 {
            ("ns", 0)
        } else if nanos < 1_000_000 {
            ("µs", 3)
        } else {
            ("ms", 6)
        };
        return format!("{}{unit}", frac(nanos, prec));
    }
    let mut out = String::new();
    let secs_total = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let hours = secs_total / 3600;
    let mins = (secs_total / 60) % 60;
    let secs = secs_total % 60;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || mins > 0 {
        let _ = write!(out, "{mins}m");
    }
    let _ = write!(out, "{}s", frac(secs * 1_000_000_000 + sub, 9));
    out
}

/// `v / 10^prec` printed with the fraction's trailing zeros (and a bare point) removed.
fn frac(v: u64, prec: u32) -> String {
    let div = 10u64.pow(prec);
    let int = v / div;
    let mut fraction = format!("{:0width$}", v % div, width = prec as usize);
    while fraction.ends_with('0') {
        fraction.pop();
    }
    if fraction.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{fraction}")
    }
}

/// Parses a duration the way Go's `time.ParseDuration` does (`2s`, `500ms`, `1m30s`,
/// `1.5h`), with its error text on failure.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", quote(s.as_bytes()));
    let mut rest = s;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    quote(s.as_bytes())
                ))
            }
            other => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(other.as_bytes()),
                    quote(s.as_bytes())
                ))
            }
        };
        total += value * scale;
    }
    if negative && total > 0.0 {
        // A negative timeout means "already expired" to Go; kvctl treats it as zero.
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Parses a signed integer like Go's `strconv.ParseInt(s, base, 64)`, returning its error
/// text (`strconv.ParseInt: parsing "zz": invalid syntax`) on failure.
pub fn parse_int(s: &str, base: u32) -> Result<i64, String> {
    let err = |what: &str| format!("strconv.ParseInt: parsing {}: {what}", quote(s.as_bytes()));
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_digits(digits, base).ok_or_else(|| err("invalid syntax"))?;
    match magnitude {
        Some(m) if !negative && m <= i64::MAX as u64 => Ok(m as i64),
        Some(m) if negative && m <= i64::MAX as u64 + 1 => Ok((m as i64).wrapping_neg()),
        _ => Err(err("value out of range")),
    }
}

/// Parses an unsigned integer like Go's `strconv.ParseUint(s, base, 64)`, with its error text.
pub fn parse_uint(s: &str, base: u32) -> Result<u64, String> {
    let err = |what: &str| format!("strconv.ParseUint: parsing {}: {what}", quote(s.as_bytes()));
    match parse_digits(s, base) {
        None => Err(err("invalid syntax")),
        Some(None) => Err(err("value out of range")),
        Some(Some(v)) => Ok(v),
    }
}

/// `None` when `s` is not a number in `base`, `Some(None)` when it overflows a `u64`.
fn parse_digits(s: &str, base: u32) -> Option<Option<u64>> {
    if s.is_empty() {
        return None;
    }
    let mut value: Option<u64> = Some(0);
    for c in s.chars() {
        let digit = c.to_digit(base)? as u64;
        value = value
            .and_then(|v| v.checked_mul(base as u64))
            .and_then(|v| v.checked_add(digit));
    }
    Some(value)
}

/// Unquotes a Go string literal (`"a\tb"`, `` `raw` ``) like `strconv.Unquote`, returning
/// the bytes it denotes; `Err("invalid syntax")` for anything else.
pub fn unquote(s: &str) -> Result<Vec<u8>, String> {
    let invalid = || "invalid syntax".to_string();
    let bytes = s.as_bytes();
    if bytes.len() < 2 {
        return Err(invalid());
    }
    let (open, close) = (bytes[0], bytes[bytes.len() - 1]);
    let body = &s[1..s.len() - 1];
    match (open, close) {
        (b'`', b'`') if !body.contains('`') => Ok(body.replace('\r', "").into_bytes()),
        (b'"', b'"') => {
            let mut out = Vec::with_capacity(body.len());
            let mut chars = body.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '"' | '\n' => return Err(invalid()),
                    '\\' => unescape(&mut chars, &mut out).ok_or_else(invalid)?,
                    c => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            Ok(out)
        }
        _ => Err(invalid()),
    }
}

/// Decodes one backslash escape of a double-quoted Go string (the backslash already read).
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut Vec<u8>) -> Option<()> {
    let hex = |n: usize, chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut v: u32 = 0;
        for _ in 0..n {
            v = v * 16 + chars.next()?.to_digit(16)?;
        }
        Some(v)
    };
    let simple = |b: u8, out: &mut Vec<u8>| out.push(b);
    match chars.next()? {
        'a' => simple(7, out),
        'b' => simple(8, out),
        'f' => simple(0x0c, out),
        'n' => simple(b'\n', out),
        'r' => simple(b'\r', out),
        't' => simple(b'\t', out),
        'v' => simple(0x0b, out),
        '\\' => simple(b'\\', out),
        '"' => simple(b'"', out),
        'x' => out.push(hex(2, chars)? as u8),
        'u' => {
            let c = char::from_u32(hex(4, chars)?)?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        'U' => {
            let c = char::from_u32(hex(8, chars)?)?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        d @ '0'..='7' => {
            let mut v = d.to_digit(8)?;
            for _ in 0..2 {
                v = v * 8 + chars.next()?.to_digit(8)?;
            }
            if v > 255 {
                return None;
            }
            out.push(v as u8);
        }
        _ => return None,
    }
    Some(())
}

/// Formats a byte count like go-humanize's `Bytes` (SI units): `20 kB`, `1.5 MB`, `9 B`.
pub fn humanize_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let s = size as f64;
    let e = (s.ln() / 1000f64.ln()).floor();
    let suffix = UNITS[(e as usize).min(UNITS.len() - 1)];
    let val = (s / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// Formats a list of strings like Go's `%v` of a `[]string`: `[a b c]`.
pub fn string_list<S: AsRef<str>>(items: &[S]) -> String {
    let joined: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", joined.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go_strconv_quote() {
        assert_eq!(quote(b"foo"), r#""foo""#);
        assert_eq!(quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote(b"\n\t\x00\x7f"), r#""\n\t\x00\x7f""#);
        assert_eq!(quote("é€".as_bytes()), "\"é€\"");
        assert_eq!(quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(quote("\u{a0}\u{2028}".as_bytes()), r#""\u00a0\u2028""#);
    }

    #[test]
    fn duration_matches_go_duration_string() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_nanos(850)), "850ns");
        assert_eq!(duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(duration(Duration::from_nanos(1_904_781)), "1.904781ms");
        assert_eq!(duration(Duration::from_millis(2)), "2ms");
        assert_eq!(
            duration(Duration::from_nanos(5_001_077_291)),
            "5.001077291s"
        );
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(duration(Duration::from_millis(3_723_500)), "1h2m3.5s");
    }

    #[test]
    fn parse_duration_accepts_go_syntax() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("abc"),
            Err(r#"time: invalid duration "abc""#.into())
        );
        assert_eq!(
            parse_duration("5"),
            Err(r#"time: missing unit in duration "5""#.into())
        );
        assert_eq!(
            parse_duration("5x"),
            Err(r#"time: unknown unit "x" in duration "5x""#.into())
        );
    }

    #[test]
    fn parse_int_reports_like_strconv() {
        assert_eq!(parse_int("694d5765fc71500b", 16), Ok(0x694d5765fc71500b));
        assert_eq!(parse_int("-12", 10), Ok(-12));
        assert_eq!(
            parse_int("zz", 16),
            Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.into())
        );
        assert_eq!(
            parse_int("", 10),
            Err(r#"strconv.ParseInt: parsing "": invalid syntax"#.into())
        );
        assert_eq!(
            parse_int("ffffffffffffffff", 16),
            Err(r#"strconv.ParseInt: parsing "ffffffffffffffff": value out of range"#.into())
        );
        assert_eq!(parse_uint("ffffffffffffffff", 16), Ok(u64::MAX));
        assert_eq!(
            parse_uint("-1", 16),
            Err(r#"strconv.ParseUint: parsing "-1": invalid syntax"#.into())
        );
    }

    #[test]
    fn unquote_decodes_go_escapes() {
        assert_eq!(unquote(r#""a\tb""#), Ok(b"a\tb".to_vec()));
        assert_eq!(
            unquote(r#""a\x41\u00e9\101""#),
            Ok("aAéA".as_bytes().to_vec())
        );
        assert_eq!(unquote(r#""\xff""#), Ok(vec![0xff]));
        assert_eq!(unquote("`raw\\n`"), Ok(b"raw\\n".to_vec()));
        assert!(unquote(r#""a\q""#).is_err());
        assert!(unquote(r#""a"b""#).is_err());
        assert!(unquote("'a'").is_err());
    }

    #[test]
    fn humanize_bytes_matches_go_humanize() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(999), "999 B");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(823296), "823 kB");
        assert_eq!(humanize_bytes(262144), "262 kB");
        assert_eq!(humanize_bytes(1_500_000), "1.5 MB");
    }
}
