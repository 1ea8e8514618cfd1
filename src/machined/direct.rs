//! One machine by name over a plain blocking socket: the quick path of every command that
//! works on one machine (`machnet routes NAME`, `exec`, `links`, `route get`, ...).
//!
//! zbus answers the same questions, but it waits for the bus to accept each step before it
//! takes the next: authentication and Hello, then the calls. The D-Bus protocol lets a
//! client send all of that at once (sd-bus does), and dbus-daemon handles it in order. So
//! this sends, in one write, the authentication, Hello, GetMachine and GetAll at the path
//! systemd gives that name, and after pinning, `Get Leader` for the design's re-check: two
//! round trips to machined and no async runtime in between, where zbus took three round
//! trips and its own bookkeeping. It saves about a fifth of `machnet routes NAME`
//! (BENCHMARKS.md).
//!
//! It takes only the road where every answer is a success. Anything else (an address it does
//! not know how to reach, a refused authentication, an error reply such as NoSuchMachine,
//! a path other than the one guessed) makes it step aside with `None`, and the caller asks
//! again through [`super::Machined`], which knows every error by name and words it. Messages
//! are built by zbus and read back with zbus's checked decoder, never by hand.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::num::NonZeroU32;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;

use zbus::wire::serialized::{Context, Data};
use zbus::wire::{Endian, Variant};
use zbus::{Message, OwnedObjectPath, OwnedVariant};

use super::{expected_machine_path, Machine, CALL_TIMEOUT, MACHINE_INTERFACE, MANAGER_PATH};
use crate::error::{Error, Result};

/// Where the system bus listens when DBUS_SYSTEM_BUS_ADDRESS does not say (as in zbus).
const DEFAULT_SYSTEM_BUS: &str = "/var/run/dbus/system_bus_socket";
const BUS_SERVICE: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";
const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";
/// The D-Bus specification's limit on one message.
const MAX_MESSAGE: usize = 128 * 1024 * 1024;

/// An authenticated connection to the system bus that has said Hello.
pub struct DirectBus {
    socket: UnixStream,
    /// Bytes read but not yet taken as a message.
    pending: Vec<u8>,
    next_serial: u32,
    /// The GUID the bus address promised, if it named one.
    guid: Option<String>,
}

/// A `Get Leader` sent, to be read with [`DirectBus::leader`].
pub struct LeaderAsked(NonZeroU32);

/// A reply, as far as this module reads replies: its body when it is a method return, or
/// the error name when it is an error.
enum Reply {
    Return {
        endian: Endian,
        signature: String,
        body: Vec<u8>,
    },
    Error(String),
}

/// A lookup sent to the bus whose answers have not been read yet.
pub struct Asked {
    bus: DirectBus,
    name: String,
    guess: OwnedObjectPath,
    serials: [NonZeroU32; 3],
}

/// The lookup `ask_early` sent for the command's machine, waiting for the command to
/// reach the point where it needs the answer.
static ASKED_EARLY: Mutex<Option<Asked>> = Mutex::new(None);

/// Sends the lookup of `name` before the command starts, so that dbus-daemon and machined
/// work on it while machnet sets itself up (argument parsing, runtime, name tables,
/// privilege check): their answers are waiting when [`DirectBus::machine`] is called. A
/// lookup of another name sent earlier is dropped. Does nothing when the bus cannot be
/// reached this way; the lookup then happens in its turn.
pub fn ask_early(name: &str) {
    let mut early = ASKED_EARLY.lock().unwrap_or_else(|e| e.into_inner());
    if early.as_ref().is_some_and(|asked| asked.name == name) {
        return; // asked already, from the raw arguments (cli::guess_machine_target)
    }
    *early = DirectBus::ask(name);
}

impl DirectBus {
    /// Looks `name` up: connects, authenticates and asks everything in one write (or takes
    /// the lookup [`ask_early`] sent). `None` when the answer is anything but plain success:
    /// the caller then asks through zbus.
    pub fn machine(name: &str) -> Result<Option<(DirectBus, Machine)>> {
        let early = ASKED_EARLY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|asked| asked.name == name);
        match early.or_else(|| DirectBus::ask(name)) {
            Some(asked) => asked.answer(),
            None => Ok(None),
        }
    }

    /// Connects, then writes the authentication, Hello, GetMachine and GetAll at the path
    /// systemd gives `name`, without waiting for any answer.
    fn ask(name: &str) -> Option<Asked> {
        let Some(address) = system_bus_address() else {
            return step_aside("DBUS_SYSTEM_BUS_ADDRESS is not a plain unix:path");
        };
        let Some(guess) = expected_machine_path(name) else {
            return step_aside("the name has no object path of its own");
        };
        let socket = match UnixStream::connect(&address.path) {
            Ok(socket) => socket,
            Err(e) => {
                let path = address.path.display();
                return step_aside(&format!("connecting to {path}: {e}"));
            }
        };
        if let Err(e) = socket.set_read_timeout(Some(CALL_TIMEOUT)) {
            return step_aside(&format!("setting a timeout on the bus socket: {e}"));
        }
        let mut bus = DirectBus {
            socket,
            pending: Vec::new(),
            next_serial: 1,
            guid: address.guid,
        };
        let mut out = authentication(rustix::process::geteuid().as_raw());
        let serials = [
            bus.call(&mut out, BUS_PATH, BUS_SERVICE, BUS_SERVICE, "Hello", &()),
            bus.call(
                &mut out,
                MANAGER_PATH,
                super::SERVICE,
                super::MANAGER_INTERFACE,
                "GetMachine",
                &(name,),
            ),
            bus.call(
                &mut out,
                guess.as_str(),
                super::SERVICE,
                PROPERTIES_INTERFACE,
                "GetAll",
                &(MACHINE_INTERFACE,),
            ),
        ];
        let serials = match serials {
            [Ok(a), Ok(b), Ok(c)] => [a, b, c],
            _ => return step_aside("a call could not be built"),
        };
        if let Err(e) = bus.write(&out) {
            return step_aside(&e.to_string());
        }
        Some(Asked {
            bus,
            name: name.to_string(),
            guess,
            serials,
        })
    }
}

impl Asked {
    /// Reads the answers to what [`DirectBus::ask`] sent.
    fn answer(self) -> Result<Option<(DirectBus, Machine)>> {
        let Asked {
            mut bus,
            guess,
            serials,
            ..
        } = self;
        if !bus.accepted()? {
            return Ok(step_aside(
                "the bus did not accept EXTERNAL authentication, or gave another guid than the address",
            ));
        }
        let [_, found, all] = bus.replies(serials)?;
        let Some(found) = found.decode::<OwnedObjectPath>("o")? else {
            return Ok(step_aside("GetMachine did not succeed"));
        };
        if found != guess {
            return Ok(step_aside("machined gave the machine another object path"));
        }
        let Some(all) = all.decode::<HashMap<String, OwnedVariant>>("a{sv}")? else {
            return Ok(step_aside("GetAll did not succeed"));
        };
        let machine = Machine::from_properties(found, &all)?;
        Ok(Some((bus, machine)))
    }
}

impl DirectBus {
    /// Sends the re-check after pinning: `Get Leader`, whose answer [`Self::leader`] reads.
    /// Split in two so the caller can work while machined answers.
    pub fn ask_leader(&mut self, path: &OwnedObjectPath) -> Result<LeaderAsked> {
        let mut out = Vec::new();
        let serial = self.call(
            &mut out,
            path.as_str(),
            super::SERVICE,
            PROPERTIES_INTERFACE,
            "Get",
            &(MACHINE_INTERFACE, "Leader"),
        )?;
        self.write(&out)?;
        Ok(LeaderAsked(serial))
    }

    /// The Leader machined reports now; `None` when the answer is an error, which the
    /// caller leaves to zbus to word.
    pub fn leader(&mut self, asked: LeaderAsked) -> Result<Option<u32>> {
        let [reply] = self.replies([asked.0])?;
        let Some(value) = reply.decode::<OwnedVariant>("v")? else {
            return Ok(step_aside("Get Leader did not succeed"));
        };
        value
            .downcast_ref::<u32>()
            .map(Some)
            .map_err(|_| super::wrong_type("Leader"))
    }

    /// Appends one method call to `out`; returns its serial.
    fn call<B>(
        &mut self,
        out: &mut Vec<u8>,
        path: &str,
        destination: &str,
        interface: &str,
        member: &str,
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

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.socket
            .write_all(bytes)
            .map_err(|e| unavailable(format!("writing to the system bus: {e}")))
    }

    /// Reads the bus's answer to the authentication: `OK <guid>` (with the GUID the
    /// address promised, if it named one), or else a refusal.
    fn accepted(&mut self) -> Result<bool> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..end + 2).collect();
                let guid = line[..end].strip_prefix(b"OK ");
                return Ok(match (guid, &self.guid) {
                    (Some(said), Some(promised)) => said == promised.as_bytes(),
                    (Some(_), None) => true,
                    (None, _) => false,
                });
            }
            if self.pending.len() > 4096 {
                return Ok(false);
            }
            self.fill()?;
        }
    }

    /// The replies to `serials`, in that order; other messages (NameAcquired) are skipped.
    fn replies<const N: usize>(&mut self, serials: [NonZeroU32; N]) -> Result<[Reply; N]> {
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
                    "systemd-machined gave no answer within {}s",
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
    /// The body as `T` when this is a method return with signature `signature`; `None` for
    /// an error reply. A return of another signature is machined breaking its interface.
    fn decode<T>(self, signature: &str) -> Result<Option<T>>
    where
        T: for<'d> serde::Deserialize<'d>,
    {
        let (endian, actual, body) = match self {
            Reply::Error(name) => {
                tracing::debug!("the bus answered {name}");
                return Ok(None);
            }
            Reply::Return {
                endian,
                signature,
                body,
            } => (endian, signature, body),
        };
        if actual != signature {
            return Err(Error::Other(format!(
                "the system bus answered with a body of type {actual:?} where {signature:?} was expected"
            )));
        }
        let data = Data::new(body, Context::new(endian, 0));
        let (value, _) = data
            .deserialize_for_signature::<_, T>(signature)
            .map_err(|e| bad_message(&e.to_string()))?;
        Ok(Some(value))
    }
}

/// The client's half of the authentication, all at once: the NUL byte, EXTERNAL with our
/// uid (its decimal digits, hex-encoded), and BEGIN. No NEGOTIATE_UNIX_FD: nothing here
/// passes file descriptors.
fn authentication(uid: u32) -> Vec<u8> {
    let hex_uid: String = uid
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\0AUTH EXTERNAL {hex_uid}\r\nBEGIN\r\n").into_bytes()
}

/// Where the system bus listens, as far as this module can reach it.
#[derive(Debug, PartialEq, Eq)]
struct BusAddress {
    path: PathBuf,
    /// The server's GUID, when the address names one: the bus must say the same.
    guid: Option<String>,
}

/// The system bus's address, when it is one this module can reach: a single `unix:path=`
/// transport. Others (abstract sockets, lists of addresses to try in turn) are left to zbus.
fn system_bus_address() -> Option<BusAddress> {
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

/// The length of the message at the start of `bytes`, once its fixed header is in.
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
/// Signals (dbus-daemon's NameAcquired, say) are `None`.
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

fn step_aside<T>(why: &str) -> Option<T> {
    tracing::debug!("asking machined through zbus instead: {why}");
    None
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
        assert_eq!(authentication(0), b"\0AUTH EXTERNAL 30\r\nBEGIN\r\n");
        assert_eq!(
            authentication(1000),
            b"\0AUTH EXTERNAL 31303030\r\nBEGIN\r\n"
        );
    }

    #[test]
    fn frames_and_reads_back_a_reply_built_by_zbus() {
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
        let path = parsed.decode::<OwnedObjectPath>("o").unwrap();
        assert_eq!(path.unwrap().as_str(), "/org/x");
    }
}
