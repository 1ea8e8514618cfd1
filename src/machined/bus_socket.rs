//! A blocking connection to the system bus that sends method calls without waiting in
//! between and reads their replies back by serial. The lookup in `direct.rs` is built on it.
//!
//! The bytes on the wire are `wire.rs`'s. Every read and write has [`CALL_TIMEOUT`], and so
//! has connecting: a bus whose listen queue is full is never waited on.

use std::io::{ErrorKind, Read, Write};
use std::num::NonZeroU32;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::wire::{self, message_length, parse_reply, Callee, Reply};
use super::CALL_TIMEOUT;
use crate::error::{Error, Result};

/// Where the system bus listens when DBUS_SYSTEM_BUS_ADDRESS does not say (as in zbus).
const DEFAULT_SYSTEM_BUS: &str = "/var/run/dbus/system_bus_socket";

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

    /// Appends one method call to `out`, its arguments all strings; returns its serial.
    pub fn call(&mut self, out: &mut Vec<u8>, to: Callee<'_>, args: &[&str]) -> Result<NonZeroU32> {
        let serial = NonZeroU32::new(self.next_serial).expect("serials start at 1");
        self.next_serial += 1;
        wire::encode_call(out, serial, to, args)?;
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

pub(super) fn unavailable(detail: String) -> Error {
    Error::MachinedUnavailable { detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Message;

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
