//! The access log's line, formatted by hand: byte for byte what tracing-subscriber's JSON
//! (flattened, no target) and text (no ANSI, no target) formatters write for the same event,
//! without their visitors, `core::fmt` and the timestamp's `String` (~20k instructions a line
//! through tracing-subscriber, against ~1.5k here). The tests compare both against
//! tracing-subscriber's own output.

use std::cell::Cell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use http::{Method, Uri, Version};

use crate::config::LogFormat;

/// The access log's target, which `RUST_LOG` can switch off (`gatehouse::access=off`).
pub const TARGET: &str = "gatehouse::access";

/// One request's access-log fields. Never a body, a header or a token: `user` is a login.
#[derive(Clone, Copy, Debug)]
pub struct AccessLine<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request URI, as the client sent it (h2 requests carry scheme and authority).
    pub uri: &'a Uri,
    /// The answer's status.
    pub status: u16,
    /// Time from the request's arrival at the stack to its answer.
    pub latency_us: u64,
    /// HTTP/1.1 or HTTP/2.0.
    pub version: Version,
    /// The connection's peer, when the listener knows it.
    pub peer: Option<SocketAddr>,
    /// Who the request was decided for (`/authenticate` only).
    pub user: Option<&'a str>,
}

impl AccessLine<'_> {
    /// Emits the line as a tracing event, for subscribers other than gatehouse's own (tests, or
    /// a coloured terminal): the fields the hand-written formats reproduce.
    pub fn emit(&self) {
        tracing::info!(
            target: "gatehouse::access",
            method = %self.method,
            uri = %self.uri,
            status = self.status,
            latency_us = self.latency_us,
            protocol = ?self.version,
            peer = self.peer.map(tracing::field::display),
            user = self.user,
            "request"
        );
    }

    /// Appends the line as `format` writes it (with its newline), stamped `now`.
    pub fn write(&self, format: LogFormat, now: SystemTime, out: &mut Vec<u8>) {
        match format {
            LogFormat::Json => self.write_json(now, out),
            LogFormat::Text => self.write_text(now, out),
        }
    }

    fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":\"");
        json_str(self.method.as_str(), out);
        out.extend_from_slice(b"\",\"uri\":\"");
        uri_parts(self.uri, |part| json_str(part, out));
        out.extend_from_slice(b"\",\"status\":");
        integer(u64::from(self.status), out);
        out.extend_from_slice(b",\"latency_us\":");
        integer(self.latency_us, out);
        out.extend_from_slice(b",\"protocol\":\"");
        out.extend_from_slice(version(self.version).as_bytes());
        out.push(b'"');
        if let Some(peer) = self.peer {
            // An address has nothing to escape.
            out.extend_from_slice(b",\"peer\":\"");
            socket_addr(peer, out);
            out.push(b'"');
        }
        if let Some(user) = self.user {
            out.extend_from_slice(b",\"user\":\"");
            json_str(user, out);
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
    }

    fn write_text(&self, now: SystemTime, out: &mut Vec<u8>) {
        timestamp(now, out);
        out.extend_from_slice(b"  INFO request method=");
        // Display values are written as they are, as tracing-subscriber's text format does.
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.extend_from_slice(b" uri=");
        uri_parts(self.uri, |part| out.extend_from_slice(part.as_bytes()));
        out.extend_from_slice(b" status=");
        integer(u64::from(self.status), out);
        out.extend_from_slice(b" latency_us=");
        integer(self.latency_us, out);
        out.extend_from_slice(b" protocol=");
        out.extend_from_slice(version(self.version).as_bytes());
        if let Some(peer) = self.peer {
            out.extend_from_slice(b" peer=");
            socket_addr(peer, out);
        }
        if let Some(user) = self.user {
            out.extend_from_slice(b" user=");
            debug_str(user, out);
        }
        out.push(b'\n');
    }
}

/// `Uri`'s `Display`, in pieces: scheme, authority, path and query as it writes them.
fn uri_parts(uri: &Uri, mut part: impl FnMut(&str)) {
    if let Some(scheme) = uri.scheme_str() {
        part(scheme);
        part("://");
    }
    if let Some(authority) = uri.authority() {
        part(authority.as_str());
    }
    part(uri.path());
    if let Some(query) = uri.query() {
        part("?");
        part(query);
    }
}

/// `Version`'s `Debug`, which the event records.
fn version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        // `Version` is non-exhaustive; a new one would need its spelling here.
        _ => "HTTP/?",
    }
}

/// `SocketAddr`'s `Display`; IPv4 without `core::fmt`.
fn socket_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            // At most `255.255.255.255:65535` and a separator after it (22 bytes), assembled on
            // the stack and appended once.
            let mut text = [0u8; 22];
            let mut len = 0;
            let mut decimal = |n: u16, separator: u8| {
                if n >= 10_000 {
                    text[len] = b'0' + (n / 10_000) as u8;
                    len += 1;
                }
                if n >= 1_000 {
                    text[len] = b'0' + (n / 1_000 % 10) as u8;
                    len += 1;
                }
                if n >= 100 {
                    text[len] = b'0' + (n / 100 % 10) as u8;
                    len += 1;
                }
                if n >= 10 {
                    text[len] = b'0' + (n / 10 % 10) as u8;
                    len += 1;
                }
                text[len] = b'0' + (n % 10) as u8;
                text[len + 1] = separator;
                len += 2;
            };
            let [a, b, c, d] = v4.ip().octets();
            decimal(u16::from(a), b'.');
            decimal(u16::from(b), b'.');
            decimal(u16::from(c), b'.');
            decimal(u16::from(d), b':');
            decimal(v4.port(), b' ');
            // The last separator is not part of the address.
            out.extend_from_slice(&text[..len - 1]);
        }
        // IPv6's shortest form (and scope id) is not worth writing again.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A `u64` in decimal, as `itoa` or `Debug` writes it.
fn integer(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(crate::decimal::digits(n, &mut [0; 20]));
}

/// `n` as exactly `width` decimal digits (`n` < 10^width).
fn padded(n: u32, width: usize, out: &mut Vec<u8>) {
    let mut digits = [b'0'; 10];
    let mut n = n;
    for at in (0..width).rev() {
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// The bytes serde_json escapes in a string: `"`, `\` and control characters below 0x20.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// A string's contents as serde_json escapes them (the quotes are the caller's): `"`, `\` and
/// control characters below 0x20; everything else, non-ASCII and DEL included, as it is.
fn json_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        // One table look-up per byte for the common case: nothing to escape.
        if !ESCAPED[b as usize] {
            continue;
        }
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A string as `str`'s `Debug` writes it (quoted), which tracing-subscriber's text format uses
/// for string fields. Printable ASCII is copied; anything else goes through `Debug` itself, whose
/// Unicode tables are not worth copying (a login is printable ASCII).
fn debug_str(s: &str, out: &mut Vec<u8>) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

thread_local! {
    /// The last second formatted on this thread and its `YYYY-MM-DDTHH:MM:SS` text: lines come
    /// thousands a second, the date changes once.
    static SECOND: Cell<Option<(i64, Stamp)>> = const { Cell::new(None) };
}

/// A formatted date and time to the second (years beyond four digits make it longer than 19).
#[derive(Clone, Copy)]
struct Stamp {
    text: [u8; 32],
    len: usize,
}

/// `now` as tracing-subscriber's `SystemTime` timer writes it: RFC 3339 in UTC with
/// microseconds, `2026-11-30T09:32:17.123456Z`.
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    // Seconds and nanoseconds since the epoch, floored (as tracing-subscriber does before 1970).
    let (secs, nanos) = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    };
    let stamp = match SECOND.get() {
        Some((second, stamp)) if second == secs => stamp,
        _ => {
            let stamp = date_time(secs);
            SECOND.set(Some((secs, stamp)));
            stamp
        }
    };
    out.extend_from_slice(&stamp.text[..stamp.len]);
    out.push(b'.');
    padded(nanos / 1_000, 6, out);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` since the epoch (proleptic Gregorian, UTC).
fn date_time(secs: i64) -> Stamp {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);

    let mut text = Vec::with_capacity(32);
    if (0..=9999).contains(&year) {
        padded(year as u32, 4, &mut text);
    } else if year > 9999 {
        let _ = write!(text, "+{year}");
    } else {
        let _ = write!(text, "{year:05}");
    }
    for (separator, value) in [
        (b'-', month),
        (b'-', day),
        (b'T', of_day / 3_600),
        (b':', of_day / 60 % 60),
        (b':', of_day % 60),
    ] {
        text.push(separator);
        padded(value, 2, &mut text);
    }
    let mut stamp = Stamp {
        text: [0; 32],
        len: text.len().min(32),
    };
    stamp.text[..stamp.len].copy_from_slice(&text[..stamp.len]);
    stamp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stamp(secs: i64, nanos: u32) -> String {
        let at = if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(u64::from(nanos))
        };
        let mut out = Vec::new();
        timestamp(at, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_across_calendar_edges() {
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            stamp(951_782_400, 999_999_999),
            "2000-02-29T00:00:00.999999Z"
        );
        assert_eq!(stamp(951_868_799, 1_000), "2000-02-29T23:59:59.000001Z");
        assert_eq!(stamp(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(
            stamp(1_796_031_137, 123_456_000),
            "2026-11-30T09:32:17.123456Z"
        );
        assert_eq!(stamp(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        assert_eq!(stamp(253_402_300_800, 0), "+10000-01-01T00:00:00.000000Z");
        // Before the epoch, floored as tracing-subscriber floors it.
        assert_eq!(stamp(-1, 500_000_000), "1969-12-31T23:59:59.500000Z");
        // The per-second cache: another second on the same thread, then the first again.
        assert_eq!(stamp(0, 1_000), "1970-01-01T00:00:00.000001Z");
    }

    #[test]
    fn json_escapes_as_serde_json_does() {
        let hostile = "a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f} \u{7f}\u{85}ü€😀'/<>";
        let mut out = Vec::new();
        json_str(hostile, &mut out);
        let expected = serde_json::to_string(hostile).unwrap();
        assert_eq!(format!("\"{}\"", String::from_utf8(out).unwrap()), expected);
        for b in 0u8..0x80 {
            let s = (b as char).to_string();
            let mut out = Vec::new();
            json_str(&s, &mut out);
            assert_eq!(
                format!("\"{}\"", String::from_utf8(out).unwrap()),
                serde_json::to_string(&s).unwrap(),
                "byte {b:#x}"
            );
        }
    }

    #[test]
    fn text_strings_are_debug_quoted() {
        for s in [
            "octocat",
            "",
            "it's",
            "a\"b",
            "a\\b",
            "line\nbreak",
            "\u{1b}[31m",
            "ü",
        ] {
            let mut out = Vec::new();
            debug_str(s, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{s:?}"));
        }
    }

    #[test]
    fn numbers_and_addresses_as_display_writes_them() {
        for n in [0, 7, 10, 99, 200, 65_535, u64::MAX] {
            let mut out = Vec::new();
            integer(n, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        for addr in [
            "127.0.0.1:40312",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:8443",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            socket_addr(addr, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
        for v in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            assert_eq!(version(v), format!("{v:?}"));
        }
    }
}
