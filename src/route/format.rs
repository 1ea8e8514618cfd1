//! Small formatting helpers that must match what iproute2 gets from glibc and printf.

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};

/// An address as glibc's inet_ntop writes it. Differs from Rust's Display in one place:
/// glibc writes IPv4-compatible addresses (`::a.b.c.d`) in dotted form too.
pub fn write_ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(out, "{a}.{b}.{c}.{d}");
        }
        IpAddr::V6(v6) => write_ipv6(out, &v6),
    }
}

fn write_ipv6(out: &mut Vec<u8>, addr: &Ipv6Addr) {
    let words = addr.segments();
    // The longest run of zero words (at least two), the first on a tie, becomes "::".
    let (mut best_base, mut best_len) = (usize::MAX, 0);
    let mut i = 0;
    while i < 8 {
        if words[i] == 0 {
            let start = i;
            while i < 8 && words[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                (best_base, best_len) = (start, i - start);
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_base = usize::MAX;
    }
    let mut i = 0;
    while i < 8 {
        if i == best_base {
            out.push(b':');
            i += best_len;
            if i == 8 {
                out.push(b':');
            }
            continue;
        }
        if i != 0 {
            out.push(b':');
        }
        let embeds_ipv4 =
            i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff));
        if embeds_ipv4 {
            let o = addr.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
}

pub fn ip_string(addr: IpAddr) -> String {
    let mut out = Vec::with_capacity(40);
    write_ip(&mut out, addr);
    String::from_utf8(out).expect("addresses are ASCII")
}

/// printf's `%g`: six significant digits, trailing zeros dropped, exponent form outside
/// [1e-4, 1e6). iproute2 prints rtt/rttvar/rto_min of a second or more this way.
pub fn printf_g(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    // Round to six significant digits first: rounding may carry into the next power of ten.
    // (The exponent is read from that, not computed with log10: that one call was all
    // machnet took from libm, a library every run had to map.)
    let sci = format!("{:.5e}", value);
    let (mantissa, exp) = sci.split_once('e').expect("format gives an exponent");
    let exp: i32 = exp.parse().expect("format gives an integer exponent");
    if !(-4..6).contains(&exp) {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Writes a JSON string as iproute2's json_writer does: the usual escapes, and (unlike
/// iproute2, which writes other control bytes raw and so emits invalid JSON) `\u00XX` for
/// the rest, so what we print always parses.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            c if c < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> String {
        ip_string(s.parse().unwrap())
    }

    #[test]
    fn ipv6_matches_glibc() {
        assert_eq!(v6("::"), "::");
        assert_eq!(v6("::1"), "::1");
        assert_eq!(v6("fe80::1"), "fe80::1");
        assert_eq!(v6("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
        assert_eq!(v6("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
        assert_eq!(v6("::ffff:10.0.0.1"), "::ffff:10.0.0.1");
        assert_eq!(v6("::10.0.0.1"), "::10.0.0.1");
        assert_eq!(v6("ff02::1:ff00:1"), "ff02::1:ff00:1");
        assert_eq!(v6("1::"), "1::");
        assert_eq!(v6("fd88::"), "fd88::");
    }

    #[test]
    fn printf_g_matches_c() {
        assert_eq!(printf_g(1.0), "1");
        assert_eq!(printf_g(1.5), "1.5");
        assert_eq!(printf_g(2.125), "2.125");
        assert_eq!(printf_g(4294967.295), "4.29497e+06");
        assert_eq!(printf_g(999999.9), "1e+06");
        assert_eq!(printf_g(123456.7), "123457");
    }

    #[test]
    fn json_strings_escape_like_iproute2() {
        let mut out = Vec::new();
        write_json_str(&mut out, "a\"b\\c\td\u{1}");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\td\u0001""#);
    }
}
