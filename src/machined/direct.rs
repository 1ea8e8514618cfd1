//! One machine by name in two round trips: the quick path of every command that works on
//! one machine (`machnet routes NAME`, `exec`, `links`, `route get`, ...).
//!
//! zbus answers the same questions, but it waits for the bus to accept each step before it
//! takes the next: authentication and Hello, then the calls. The D-Bus protocol lets a
//! client send all of that at once (sd-bus does), and dbus-daemon handles it in order. So
//! this sends, in one write on a [`BusSocket`], the authentication, Hello, GetMachine and
//! GetAll at the path systemd gives that name; and after pinning, `Get Leader` for the
//! design's re-check, whose answer comes while the command's socket is made
//! (`target::resolve_machine_directly`). main sends the first write before it has even
//! parsed its arguments ([`ask_early`]). BENCHMARKS.md has what each step saved.
//!
//! It takes only the road where machined's answers are successes. Any other answer (an
//! address it cannot reach this way, a refused authentication, an error reply such as
//! NoSuchMachine, a path other than the one guessed) makes it step aside with `None`, and
//! the caller asks again through [`super::Machined`], which knows every error by name and
//! words it. Only a bus that stops talking (it closes the connection, sends a malformed
//! message, or says nothing for CALL_TIMEOUT) is reported from here, as machined being
//! unavailable: asking it again through zbus would only wait as long again.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use zbus::{OwnedObjectPath, OwnedVariant};

use super::bus_socket::{system_bus_address, Authentication, BusSocket};
use super::{expected_machine_path, Machine, MACHINE_INTERFACE, MANAGER_PATH, SERVICE};
use crate::error::Result;

const BUS_SERVICE: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";
const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";

/// A lookup sent to the bus whose answers have not been read yet.
pub struct Asked {
    bus: BusSocket,
    guess: OwnedObjectPath,
    /// Hello, GetMachine, GetAll.
    serials: [NonZeroU32; 3],
}

/// The bus, after a lookup that found the machine: the leader re-check goes on it.
pub struct DirectBus {
    bus: BusSocket,
}

/// A `Get Leader` sent, to be read with [`DirectBus::leader`].
pub struct LeaderAsked(NonZeroU32);

/// What machined says of the machine's leader after pinning.
pub enum LeaderNow {
    Is(u32),
    /// The machine's object is gone: it was unregistered.
    Gone,
    /// Another error: left to zbus to word.
    Unclear,
}

/// The outcome of [`ask`]: sent, or the reason it could not be.
type Sent = std::result::Result<Asked, String>;

/// The lookup `ask_early` sent (or could not send) for a machine, waiting for the command
/// to reach the point where it needs the answer.
static ASKED_EARLY: Mutex<Option<(String, Sent)>> = Mutex::new(None);

/// Sends the lookup of `name` before the command starts, so that dbus-daemon and machined
/// work on it while machnet sets itself up (argument parsing, runtime, name tables,
/// privilege check): their answers are waiting when [`DirectBus::machine`] is called. A
/// lookup of another name sent earlier is dropped; one of the same name is kept, even when
/// it could not be sent (that is not tried twice). Not for other users than root: they are
/// refused (netns::require_privileges) before machnet would otherwise talk to the bus.
pub fn ask_early(name: &str) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let mut early = ASKED_EARLY.lock().unwrap_or_else(|e| e.into_inner());
    if early
        .as_ref()
        .is_some_and(|(asked_for, _)| asked_for == name)
    {
        return; // asked already, from the raw arguments (cli::guess_machine_target)
    }
    *early = Some((name.to_string(), ask(name)));
}

impl DirectBus {
    /// Looks `name` up: takes the lookup [`ask_early`] sent for it, or sends one now, and
    /// reads the answers. `None` when they are anything but successes: the caller then
    /// asks through zbus.
    pub fn machine(name: &str) -> Result<Option<(DirectBus, Machine)>> {
        let early = ASKED_EARLY.lock().unwrap_or_else(|e| e.into_inner()).take();
        let sent = match early {
            Some((asked_for, sent)) if asked_for == name => sent,
            _ => ask(name),
        };
        match sent {
            Ok(asked) => asked.answer(),
            Err(why) => Ok(step_aside(&why)),
        }
    }

    /// Sends the re-check after pinning: `Get Leader`, whose answer [`Self::leader`] reads.
    /// In two halves so that the caller can work while machined answers.
    pub fn ask_leader(&mut self, path: &OwnedObjectPath) -> Result<LeaderAsked> {
        let mut out = Vec::new();
        let serial = self.bus.call(
            &mut out,
            (SERVICE, path.as_str(), PROPERTIES_INTERFACE, "Get"),
            &[MACHINE_INTERFACE, "Leader"],
        )?;
        self.bus.write(&out)?;
        Ok(LeaderAsked(serial))
    }

    pub fn leader(&mut self, asked: LeaderAsked) -> Result<LeaderNow> {
        let [reply] = self.bus.replies([asked.0])?;
        let value = match reply.decode::<OwnedVariant>("v")? {
            Ok(value) => value,
            // What zbus's path calls "the machine disappeared" (machined.rs, unavailable).
            Err(name) if name == "org.freedesktop.DBus.Error.UnknownObject" => {
                return Ok(LeaderNow::Gone)
            }
            Err(name) => {
                step_aside::<()>(&format!("Get Leader was answered {name}"));
                return Ok(LeaderNow::Unclear);
            }
        };
        value
            .downcast_ref::<u32>()
            .map(LeaderNow::Is)
            .map_err(|_| super::wrong_type("Leader"))
    }
}

/// Connects, then writes the authentication, Hello, GetMachine and GetAll at the path
/// systemd gives `name`, without waiting for any answer.
fn ask(name: &str) -> Sent {
    let address =
        system_bus_address().ok_or("DBUS_SYSTEM_BUS_ADDRESS is not a single unix:path address")?;
    let guess = expected_machine_path(name).ok_or("the name has no object path of its own")?;
    let mut out = Vec::new();
    let mut bus = BusSocket::connect(address, &mut out)?;
    let calls = [
        bus.call(&mut out, (BUS_SERVICE, BUS_PATH, BUS_SERVICE, "Hello"), &[]),
        bus.call(
            &mut out,
            (
                SERVICE,
                MANAGER_PATH,
                super::MANAGER_INTERFACE,
                "GetMachine",
            ),
            &[name],
        ),
        bus.call(
            &mut out,
            (SERVICE, guess.as_str(), PROPERTIES_INTERFACE, "GetAll"),
            &[MACHINE_INTERFACE],
        ),
    ];
    let serials = match calls {
        [Ok(hello), Ok(get_machine), Ok(get_all)] => [hello, get_machine, get_all],
        _ => return Err("a call could not be built".into()),
    };
    bus.write(&out).map_err(|e| e.to_string())?;
    Ok(Asked {
        bus,
        guess,
        serials,
    })
}

impl Asked {
    /// Reads the answers to what [`ask`] sent.
    fn answer(self) -> Result<Option<(DirectBus, Machine)>> {
        let Asked {
            mut bus,
            guess,
            serials,
        } = self;
        match bus.authentication()? {
            Authentication::Accepted => {}
            Authentication::OtherGuid => {
                return Ok(step_aside("the bus gave another guid than its address"))
            }
            Authentication::Refused => {
                return Ok(step_aside("the bus did not accept EXTERNAL authentication"))
            }
        }
        let [_, found, all] = bus.replies(serials)?;
        let found = match found.decode::<OwnedObjectPath>("o")? {
            Ok(found) => found,
            Err(name) => return Ok(step_aside(&format!("GetMachine was answered {name}"))),
        };
        if found != guess {
            return Ok(step_aside("machined gave the machine another object path"));
        }
        let all = match all.decode::<HashMap<String, OwnedVariant>>("a{sv}")? {
            Ok(all) => all,
            Err(name) => return Ok(step_aside(&format!("GetAll was answered {name}"))),
        };
        let machine = Machine::from_properties(found, &all)?;
        Ok(Some((DirectBus { bus }, machine)))
    }
}

fn step_aside<T>(why: &str) -> Option<T> {
    tracing::debug!("asking machined through zbus instead: {why}");
    None
}
