//! Writes one object's fields as iproute2's json_print.c does, in text or in `ip -j`
//! JSON: `ip route`, `ip rule` and `ip neigh` printers walk their message once and say
//! for each field how it looks in both formats, which keeps order and conditions in step.

use std::io::Write;
use std::net::IpAddr;

use super::format::{write_ip, write_json_str};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Writes fields in the chosen format: iproute2's json_print.c idioms (print_string,
/// print_uint, print_null, …), one call per field serving text and JSON alike.
pub(crate) struct Emitter<'o> {
    pub(crate) format: Format,
    pub(crate) out: &'o mut Vec<u8>,
    /// In JSON, whether the current container still needs no comma.
    pub(crate) first: bool,
}

impl<'o> Emitter<'o> {
    pub(crate) fn new(format: Format, out: &'o mut Vec<u8>) -> Emitter<'o> {
        Emitter {
            format,
            out,
            first: true,
        }
    }

    pub(crate) fn json(&self) -> bool {
        self.format == Format::Json
    }

    pub(crate) fn text(&mut self, s: &str) {
        if !self.json() {
            self.out.extend_from_slice(s.as_bytes());
        }
    }

    pub(crate) fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn separator(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }

    pub(crate) fn key(&mut self, key: &str) {
        self.separator();
        write_json_str(self.out, key);
        self.out.push(b':');
    }

    pub(crate) fn open_object(&mut self, key: Option<&str>) {
        if self.json() {
            match key {
                Some(k) => self.key(k),
                None => self.separator(),
            }
            self.out.push(b'{');
            self.first = true;
        }
    }

    pub(crate) fn close_object(&mut self) {
        if self.json() {
            self.out.push(b'}');
            self.first = false;
        }
    }

    pub(crate) fn open_array(&mut self, key: &str) {
        if self.json() {
            self.key(key);
            self.out.push(b'[');
            self.first = true;
        }
    }

    pub(crate) fn close_array(&mut self) {
        if self.json() {
            self.out.push(b']');
            self.first = false;
        }
    }

    /// Text: `prefix value ` ; JSON: `"key":"value"`.
    pub(crate) fn string(&mut self, key: &str, prefix: &str, value: &str) {
        if self.json() {
            self.key(key);
            write_json_str(self.out, value);
        } else {
            self.raw(prefix);
            self.raw(value);
            self.out.push(b' ');
        }
    }

    /// As `string`, without the trailing space in text.
    pub(crate) fn string_bare(&mut self, key: &str, prefix: &str, value: &str) {
        if self.json() {
            self.string(key, prefix, value);
        } else {
            self.raw(prefix);
            self.raw(value);
        }
    }

    pub(crate) fn addr(&mut self, key: &str, prefix: &str, addr: IpAddr) {
        let mut buf = Vec::with_capacity(40);
        write_ip(&mut buf, addr);
        self.string(key, prefix, std::str::from_utf8(&buf).expect("ASCII"));
    }

    pub(crate) fn uint(&mut self, key: &str, prefix: &str, value: u64) {
        self.uint_suffix(key, prefix, value, " ");
    }

    pub(crate) fn uint_bare(&mut self, key: &str, prefix: &str, value: u64) {
        self.uint_suffix(key, prefix, value, "");
    }

    pub(crate) fn uint_suffix(&mut self, key: &str, prefix: &str, value: u64, suffix: &str) {
        if self.json() {
            self.key(key);
            let _ = write!(self.out, "{value}");
        } else {
            let _ = write!(self.out, "{prefix}{value}{suffix}");
        }
    }

    /// A signed number; the text form is given whole because it varies.
    pub(crate) fn int(&mut self, key: &str, text: &str, value: i64) {
        if self.json() {
            self.key(key);
            let _ = write!(self.out, "{value}");
        } else {
            self.raw(text);
        }
    }

    pub(crate) fn null(&mut self, key: &str, text: &str) {
        if self.json() {
            self.key(key);
            self.raw("null");
        } else {
            self.raw(text);
        }
    }

    /// One string in a JSON array (text: `word `), as print_string(PRINT_ANY, NULL, …).
    pub(crate) fn array_string(&mut self, word: &str) {
        if self.json() {
            self.separator();
            write_json_str(self.out, word);
        } else {
            self.raw(word);
            self.raw(" ");
        }
    }
}
