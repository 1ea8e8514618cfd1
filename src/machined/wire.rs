//! The D-Bus messages of the direct lookup, on the wire: method calls whose arguments are
//! all strings (every call it makes: Hello, GetMachine, Properties.GetAll and Get) are
//! written here, byte for byte as zbus writes them (the tests compare the two), because
//! zbus's general builder took about 16 µs a call, a twentieth of the lookup. Replies are
//! framed here and known by three header fields (reply serial, error name, body
//! signature); their bodies are decoded by zbus's checked decoder.

use std::num::NonZeroU32;

use zbus::wire::serialized::{Context, Data};
use zbus::wire::{Endian, Variant};

use super::bus_socket::unavailable;
use crate::error::{Error, Result};

/// The D-Bus specification's limit on one message.
const MAX_MESSAGE: usize = 128 * 1024 * 1024;
const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;
const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SIGNATURE: u8 = 8;

/// Where a method call goes: destination, object path, interface, member.
pub type Callee<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Appends a method call with string arguments to `out`, in this machine's byte order.
/// The names are this module's callers' own constants and object paths zbus made; only a
/// string with a NUL in it (which D-Bus cannot carry) is refused.
pub fn encode_call(
    out: &mut Vec<u8>,
    serial: NonZeroU32,
    (destination, path, interface, member): Callee<'_>,
    args: &[&str],
) -> Result<()> {
    if let Some(bad) = [destination, path, interface, member]
        .iter()
        .chain(args)
        .find(|s| s.contains('\0'))
    {
        return Err(Error::Usage(format!(
            "{bad:?} holds a NUL byte, which D-Bus cannot carry"
        )));
    }
    let start = out.len();
    let mut message = Encoder { out, start };
    let endian = if cfg!(target_endian = "little") {
        b'l'
    } else {
        b'B'
    };
    message.bytes(&[endian, METHOD_CALL, 0, 1]);
    let body_length_at = message.len();
    message.u32(0); // the body's length, filled in below
    message.u32(serial.get());
    let fields_length_at = message.len();
    message.u32(0); // the header fields' length, filled in below
    let fields_start = message.len();
    let signature = "s".repeat(args.len());
    for (code, kind, value) in [
        (FIELD_PATH, b'o', path),
        (FIELD_INTERFACE, b's', interface),
        (FIELD_MEMBER, b's', member),
        (FIELD_DESTINATION, b's', destination),
        (FIELD_SIGNATURE, b'g', signature.as_str()),
    ] {
        if code == FIELD_SIGNATURE && args.is_empty() {
            continue;
        }
        message.pad_to(8);
        message.bytes(&[code, 1, kind, 0]);
        match kind {
            b'g' => message.signature(value),
            _ => message.string(value),
        }
    }
    let fields_length = message.len() - fields_start;
    message.pad_to(8);
    let body_start = message.len();
    for arg in args {
        message.string(arg);
    }
    let body_length = message.len() - body_start;
    message.put_u32(body_length_at, body_length);
    message.put_u32(fields_length_at, fields_length);
    Ok(())
}

/// Appends to one message in `out`, which starts at `start` (alignment counts from there).
struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl Encoder<'_> {
    fn len(&self) -> usize {
        self.out.len() - self.start
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn pad_to(&mut self, alignment: usize) {
        let padded = self.len().next_multiple_of(alignment);
        self.out.resize(self.start + padded, 0);
    }

    fn u32(&mut self, value: u32) {
        self.pad_to(4);
        self.bytes(&value.to_ne_bytes());
    }

    fn put_u32(&mut self, at: usize, value: usize) {
        let value = u32::try_from(value).expect("a few hundred bytes");
        let at = self.start + at;
        self.out[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }

    /// A STRING or OBJECT_PATH: its length, its bytes, a NUL.
    fn string(&mut self, value: &str) {
        self.u32(u32::try_from(value.len()).expect("names are short"));
        self.bytes(value.as_bytes());
        self.bytes(&[0]);
    }

    /// A SIGNATURE: its length in one byte, its bytes, a NUL.
    fn signature(&mut self, value: &str) {
        self.bytes(&[u8::try_from(value.len()).expect("short signature")]);
        self.bytes(value.as_bytes());
        self.bytes(&[0]);
    }
}

/// A reply, as far as this module reads replies: its body when it is a method return, or
/// the error name when it is an error.
pub enum Reply {
    Return {
        endian: Endian,
        signature: String,
        body: Vec<u8>,
    },
    Error(String),
}

impl Reply {
    /// The body as `T` when this is a method return with signature `signature`; Err(the
    /// error name) for an error reply. A return of another signature is the bus or
    /// machined breaking its interface: an error of its own.
    pub fn decode<T>(self, signature: &str) -> Result<std::result::Result<T, String>>
    where
        T: for<'d> serde::Deserialize<'d>,
    {
        let (endian, actual, body) = match self {
            Reply::Error(name) => return Ok(Err(name)),
            Reply::Return {
                endian,
                signature,
                body,
            } => (endian, signature, body),
        };
        if actual != signature {
            return Err(bad_message(&format!(
                "a reply of type {actual:?} where {signature:?} was expected"
            )));
        }
        let data = Data::new(body, Context::new(endian, 0));
        let (value, _) = data
            .deserialize_for_signature::<_, T>(signature)
            .map_err(|e| bad_message(&e.to_string()))?;
        Ok(Ok(value))
    }
}

fn endian_of(message: &[u8]) -> Result<Endian> {
    match message.first() {
        Some(b'l') => Ok(Endian::Little),
        Some(b'B') => Ok(Endian::Big),
        _ => Err(bad_message("it starts with no byte-order mark")),
    }
}

/// The length of the message at the start of `bytes`, once its fixed header is in: the
/// 16 fixed bytes, the header fields (their length at offset 12) padded to 8, the body
/// (its length at offset 4).
pub fn message_length(bytes: &[u8]) -> Result<Option<usize>> {
    if bytes.len() < 16 {
        return Ok(None);
    }
    let endian = endian_of(bytes)?;
    let u32_at = |at: usize| {
        let word: [u8; 4] = bytes[at..at + 4].try_into().expect("four bytes");
        match endian {
            Endian::Little => u32::from_le_bytes(word),
            Endian::Big => u32::from_be_bytes(word),
        }
    };
    let body = u32_at(4) as usize;
    let fields = u32_at(12) as usize;
    let total = 16usize
        .checked_add(fields)
        .map(|header| header.next_multiple_of(8))
        .and_then(|header| header.checked_add(body))
        .filter(|total| *total <= MAX_MESSAGE)
        .ok_or_else(|| bad_message("it is longer than D-Bus allows"))?;
    Ok(Some(total))
}

/// The D-Bus header: byte order, type, flags, version, body length, serial, fields.
type Header<'a> = (u8, u8, u8, u8, u32, u32, Vec<(u8, Variant<'a>)>);

/// One whole message, when it is a reply: the serial it answers, and what it says.
/// Signals (dbus-daemon's NameAcquired, say) are `None`. The sender is not checked, as zbus
/// does not check it: on a bus, only the daemon chooses who may reply to our serials.
pub fn parse_reply(message: &[u8]) -> Result<Option<(NonZeroU32, Reply)>> {
    let endian = endian_of(message)?;
    let data = Data::new(message, Context::new(endian, 0));
    let (header, header_len): (Header<'_>, usize) = data
        .deserialize_for_signature("(yyyyuua(yv))")
        .map_err(|e| bad_message(&e.to_string()))?;
    let (_, kind, _, _, _, _, fields) = header;
    let mut reply_to = None;
    let mut error_name = None;
    let mut signature = String::new();
    for (code, value) in fields {
        match (code, value) {
            (FIELD_REPLY_SERIAL, Variant::U32(serial)) => reply_to = NonZeroU32::new(serial),
            (FIELD_ERROR_NAME, Variant::Str(name)) => error_name = Some(name.to_string()),
            (FIELD_SIGNATURE, Variant::Signature(sig)) => signature = sig.to_string(),
            _ => {}
        }
    }
    let body = message[header_len.next_multiple_of(8)..].to_vec();
    let reply = match kind {
        METHOD_RETURN => Reply::Return {
            endian,
            signature,
            body,
        },
        ERROR => Reply::Error(error_name.unwrap_or_else(|| "an unnamed error".into())),
        _ => return Ok(None),
    };
    match reply_to {
        Some(serial) => Ok(Some((serial, reply))),
        None => Err(bad_message("a reply names no serial it answers")),
    }
}

fn bad_message(why: &str) -> Error {
    unavailable(format!("the system bus sent a malformed message: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::{Message, OwnedObjectPath};

    /// Every call the direct lookup makes, written here and by zbus: the same bytes.
    #[test]
    fn calls_are_written_byte_for_byte_as_zbus_writes_them() {
        let serial = |n| NonZeroU32::new(n).unwrap();
        let ours = |n, to: Callee<'_>, args: &[&str]| {
            let mut out = vec![0xaa; 3]; // what is already queued must not matter
            encode_call(&mut out, serial(n), to, args).unwrap();
            out.split_off(3)
        };
        let zbus = |n,
                    (dest, path, iface, member): Callee<'_>,
                    body: &dyn Fn(zbus::message::Builder<'_>) -> Message| {
            let builder = Message::method_call(path, member)
                .destination(dest)
                .interface(iface)
                .serial(serial(n));
            body(builder).data().bytes().to_vec()
        };
        let hello = (
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
        );
        assert_eq!(
            ours(1, hello, &[]),
            zbus(1, hello, &|b| b.build(&()).unwrap())
        );
        let get_machine = (
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            "GetMachine",
        );
        for name in ["qbittorrent", "web-1.lab", "x", "ünïcode"] {
            assert_eq!(
                ours(2, get_machine, &[name]),
                zbus(2, get_machine, &|b| b.build(&(name,)).unwrap()),
                "{name}"
            );
        }
        let get = (
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1/machine/web_2d1_2elab",
            "org.freedesktop.DBus.Properties",
            "Get",
        );
        let args = ("org.freedesktop.machine1.Machine", "Leader");
        assert_eq!(
            ours(4, get, &[args.0, args.1]),
            zbus(4, get, &|b| b.build(&args).unwrap())
        );
    }

    #[test]
    fn a_nul_in_an_argument_is_refused() {
        let to = ("a.b", "/a", "a.b", "M");
        let err = encode_call(&mut Vec::new(), NonZeroU32::new(1).unwrap(), to, &["x\0y"]);
        assert!(err.is_err());
    }

    #[test]
    fn frames_and_reads_back_replies_built_by_zbus() {
        let call = Message::method_call("/a", "M")
            .serial(NonZeroU32::new(7).unwrap())
            .build(&())
            .unwrap();
        let reply = Message::method_return(&call.header())
            .serial(NonZeroU32::new(9).unwrap())
            .build(&(OwnedObjectPath::try_from("/org/x").unwrap(),))
            .unwrap();
        let bytes = reply.data().bytes();
        assert_eq!(message_length(&bytes[..15]).unwrap(), None);
        assert_eq!(message_length(bytes).unwrap(), Some(bytes.len()));
        let (reply_to, parsed) = parse_reply(bytes).unwrap().unwrap();
        assert_eq!(reply_to, NonZeroU32::new(7).unwrap());
        let path = parsed.decode::<OwnedObjectPath>("o").unwrap().unwrap();
        assert_eq!(path.as_str(), "/org/x");

        // The same reply, asked for as another type, is a malformed answer, not a success.
        let (_, parsed) = parse_reply(bytes).unwrap().unwrap();
        assert!(parsed.decode::<String>("s").is_err());
    }
}
