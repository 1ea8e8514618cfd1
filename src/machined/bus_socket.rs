//! A blocking connection to the system bus that sends method calls without waiting in
//! between and reads their replies back by serial. The lookup in `direct.rs` is built on it.
//!
//! Messages are built by zbus, and reply bodies are decoded by zbus's checked decoder; only
//! the framing (how long a message is) and the three header fields a reply is known by
//! (reply serial, error name, body signature) are read here. Every read and write has
//! [`CALL_TIMEOUT`], and so has connecting: a bus whose listen queue is full is never
//! waited on.

use std::io::{ErrorKind, Read, Write};
use std::num::NonZeroU32;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use zbus::wire::serialized::{Context, Data};
use zbus::wire::{Endian, Variant};
use zbus::Message;

use super::CALL_TIMEOUT;
use crate::error::{Error, Result};

/// Where the system bus listens when DBUS_SYSTEM_BUS_ADDRESS does not say (as in zbus).
const DEFAULT_SYSTEM_BUS: &str = "/var/run/dbus/system_bus_socket";
/// The D-Bus specification's limit on one message.
const MAX_MESSAGE: usize = 128 * 1024 * 1024;

/// Where the system bus listens, as far as this module can reach it.
#[derive(Debug, PartialEq, Eq)]
pub struct BusAddress {
    path: PathBuf,
    /// The server's GUID, when the address names one: the bus must say the same.
    guid: Option<String>,
}

/// A connection whose authentication is sent but not yet answered (see [`Self::connect`]).
pub struct BusSocket {
    socket: UnixStream,
    /// Bytes read but not yet taken as a message.
    pending: Vec<u8>,
    next_serial: u32,
    guid: Option<String>,
}

/// How the bus answered the authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Authentication {
    Accepted,
    /// `OK` with another GUID than the address promised: not the bus meant.
    OtherGuid,
    /// REJECTED, ERROR, or no line at all.
    Refused,
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

impl BusSocket {
    /// Connects and queues the client's half of the authentication, all at once: the NUL
    /// byte, EXTERNAL with our uid, and BEGIN (no NEGOTIATE_UNIX_FD: nothing here passes
    /// file descriptors). The D-Bus protocol lets a client send its first messages right
    /// behind BEGIN, as sd-bus does; [`Self::authentication`] reads the answer later.
    /// Err says why this connection is not to be had (the caller then uses zbus).
    pub fn connect(address: BusAddress, out: &mut Vec<u8>) -> std::result::Result<Self, String> {
        let socket = connect_within_timeout(&address.path)
            .map_err(|e| format!("connecting to {}: {e}", address.path.display()))?;
        out.extend_from_slice(&authentication_line(rustix::process::geteuid().as_raw()));
        Ok(BusSocket {
            socket,
            pending: Vec::new(),
            next_serial: 1,
            guid: address.guid,
        })
    }

    /// Appends one method call to `out`; returns its serial.
    pub fn call<B>(
        &mut self,
        out: &mut Vec<u8>,
        (destination, path, interface, member): (&str, &str, &str, &str),
        body: &B,
    ) -> Result<NonZeroU32>
    where
        B: serde::Serialize + zbus::wire::DynamicType,
    {
        let serial = NonZeroU32::new(self.next_serial).expect("serials start at 1");
        self.next_serial += 1;
        let message = Message::method_call(path, member)
            .destination(destination)
            .interface(interface)
            .serial(serial)
            .build(body)
            .map_err(|e| Error::Other(format!("building the D-Bus call {member}: {e}")))?;
        out.extend_from_slice(message.data().bytes());
        Ok(serial)
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.socket
            .write_all(bytes)
            .map_err(|e| unavailable(format!("writing to the system bus: {e}")))
    }

    /// Reads the bus's answer to the authentication: one line, `OK <guid>` or a refusal.
    pub fn authentication(&mut self) -> Result<Authentication> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..end + 2).collect();
                return Ok(match (line[..end].strip_prefix(b"OK "), &self.guid) {
                    (Some(said), Some(promised)) if said != promised.as_bytes() => {
                        Authentication::OtherGuid
                    }
                    (Some(_), _) => Authentication::Accepted,
                    (None, _) => Authentication::Refused,
                });
            }
            if self.pending.len() > 4096 {
                return Ok(Authentication::Refused);
            }
            self.fill()?;
        }
    }

    /// The replies to `serials`, in that order; other messages (NameAcquired) are skipped.
    pub fn replies<const N: usize>(&mut self, serials: [NonZeroU32; N]) -> Result<[Reply; N]> {
        let mut found: [Option<Reply>; N] = std::array::from_fn(|_| None);
        while found.iter().any(Option::is_none) {
            if let Some((reply_to, reply)) = self.next_message()? {
                if let Some(i) = serials.iter().position(|s| *s == reply_to) {
                    found[i] = Some(reply);
                }
            }
        }
        Ok(found.map(|r| r.expect("every serial answered")))
    }

    /// The next whole message, when it is a reply: the serial it answers, and what it says.
    fn next_message(&mut self) -> Result<Option<(NonZeroU32, Reply)>> {
        loop {
            if let Some(len) = message_length(&self.pending)? {
                if self.pending.len() >= len {
                    let message: Vec<u8> = self.pending.drain(..len).collect();
                    return parse_reply(&message);
                }
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let read = match self.socket.read(&mut chunk) {
            Ok(0) => return Err(unavailable("the system bus closed the connection".into())),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(unavailable(format!(
                    "the system bus gave no answer within {}s",
                    CALL_TIMEOUT.as_secs()
                )))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(unavailable(format!("reading from the system bus: {e}"))),
        };
        self.pending.extend_from_slice(&chunk[..read]);
        Ok(())
    }
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

/// A connected stream socket to `path` with CALL_TIMEOUT on reads and writes. The connect
/// itself does not block: a listener whose queue is full answers EAGAIN at once.
fn connect_within_timeout(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::io::ioctl_fionbio(&fd, false)?;
    let socket = UnixStream::from(fd);
    socket.set_read_timeout(Some(CALL_TIMEOUT))?;
    socket.set_write_timeout(Some(CALL_TIMEOUT))?;
    Ok(socket)
}

/// EXTERNAL authentication names the uid by its decimal digits, hex-encoded.
fn authentication_line(uid: u32) -> Vec<u8> {
    let hex_uid: String = uid
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\0AUTH EXTERNAL {hex_uid}\r\nBEGIN\r\n").into_bytes()
}

/// The system bus's address, when it is one this module can reach: a single `unix:path=`
/// transport. Others (abstract sockets, lists of addresses to try in turn) are left to zbus.
pub fn system_bus_address() -> Option<BusAddress> {
    match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Ok(address) => parse_address(&address),
        Err(std::env::VarError::NotPresent) => Some(BusAddress {
            path: PathBuf::from(DEFAULT_SYSTEM_BUS),
            guid: None,
        }),
        Err(std::env::VarError::NotUnicode(_)) => None,
    }
}

fn parse_address(address: &str) -> Option<BusAddress> {
    use std::os::unix::ffi::OsStringExt;
    let address = address.strip_suffix(';').unwrap_or(address);
    let keys = address.strip_prefix("unix:")?;
    if address.contains(';') {
        return None;
    }
    let (mut path, mut guid) = (None, None);
    for pair in keys.split(',') {
        let (key, value) = pair.split_once('=')?;
        let value = unescape(value)?;
        match key {
            "path" => path = Some(PathBuf::from(std::ffi::OsString::from_vec(value))),
            "guid" => guid = Some(String::from_utf8(value).ok()?),
            _ => return None,
        }
    }
    Some(BusAddress { path: path?, guid })
}

/// Undoes the address escaping of the D-Bus specification (`%` and two hex digits).
fn unescape(value: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
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
fn message_length(bytes: &[u8]) -> Result<Option<usize>> {
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
    let total = (16 + fields).next_multiple_of(8) + body;
    if total > MAX_MESSAGE {
        return Err(bad_message("it is longer than D-Bus allows"));
    }
    Ok(Some(total))
}

/// The D-Bus header: byte order, type, flags, version, body length, serial, fields.
type Header<'a> = (u8, u8, u8, u8, u32, u32, Vec<(u8, Variant<'a>)>);
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_SIGNATURE: u8 = 8;

/// One whole message, when it is a reply: the serial it answers, and what it says.
/// Signals (dbus-daemon's NameAcquired, say) are `None`. The sender is not checked, as zbus
/// does not check it: on a bus, only the daemon chooses who may reply to our serials.
fn parse_reply(message: &[u8]) -> Result<Option<(NonZeroU32, Reply)>> {
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

fn unavailable(detail: String) -> Error {
    Error::MachinedUnavailable { detail }
}

fn bad_message(why: &str) -> Error {
    unavailable(format!("the system bus sent a malformed message: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::OwnedObjectPath;

    #[test]
    fn reads_plain_unix_paths_only() {
        let path = |a: &str| parse_address(a).map(|b| b.path.display().to_string());
        assert_eq!(
            path("unix:path=/run/dbus/system_bus_socket").as_deref(),
            Some("/run/dbus/system_bus_socket")
        );
        assert_eq!(
            parse_address("unix:path=/tmp/a%20b,guid=0123abcd;"),
            Some(BusAddress {
                path: PathBuf::from("/tmp/a b"),
                guid: Some("0123abcd".into())
            })
        );
        assert_eq!(path("unix:abstract=/tmp/dbus-x"), None);
        assert_eq!(path("unix:path=/a;unix:path=/b"), None);
        assert_eq!(path("tcp:host=localhost,port=1"), None);
        assert_eq!(path("unix:path=/a%2"), None);
        assert_eq!(path("unix:guid=00"), None);
    }

    #[test]
    fn authenticates_as_our_uid_in_one_go() {
        assert_eq!(authentication_line(0), b"\0AUTH EXTERNAL 30\r\nBEGIN\r\n");
        assert_eq!(
            authentication_line(1000),
            b"\0AUTH EXTERNAL 31303030\r\nBEGIN\r\n"
        );
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

    #[test]
    fn a_connection_reads_replies_split_across_reads_and_skips_signals() {
        use std::os::unix::net::UnixStream;
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut bus = BusSocket {
            socket: ours,
            pending: Vec::new(),
            next_serial: 1,
            guid: Some("abc".into()),
        };
        let call = |serial| {
            Message::method_call("/a", "M")
                .serial(NonZeroU32::new(serial).unwrap())
                .build(&())
                .unwrap()
        };
        let signal = Message::signal("/org/freedesktop/DBus", "org.freedesktop.DBus", "X")
            .build(&("hi",))
            .unwrap();
        let answer = |serial, text: &str| {
            Message::method_return(&call(serial).header())
                .build(&(text,))
                .unwrap()
        };
        let mut stream = b"OK abc\r\n".to_vec();
        stream.extend_from_slice(signal.data().bytes());
        stream.extend_from_slice(answer(2, "two").data().bytes());
        stream.extend_from_slice(answer(1, "one").data().bytes());
        let mut theirs = theirs;
        let writer = std::thread::spawn(move || {
            // A byte at a time: every message arrives split across reads.
            for byte in stream {
                theirs.write_all(&[byte]).unwrap();
            }
        });
        assert_eq!(bus.authentication().unwrap(), Authentication::Accepted);
        let [one, two] = bus
            .replies([NonZeroU32::new(1).unwrap(), NonZeroU32::new(2).unwrap()])
            .unwrap();
        writer.join().unwrap();
        assert_eq!(one.decode::<String>("s").unwrap().unwrap(), "one");
        assert_eq!(two.decode::<String>("s").unwrap().unwrap(), "two");
    }
}
