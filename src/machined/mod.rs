//! systemd-machined over D-Bus: which machines exist, and who leads each.
//!
//! The proxies below use only what `dbus/VERSION/org.freedesktop.machine1.*.xml`
//! (introspected from real machined 252 and 262) declares; `tests/dbus_interfaces.rs` holds
//! them to it.

use std::collections::HashMap;
use std::time::Duration;

use zbus::{Connection, OwnedObjectPath, OwnedVariant};

use crate::error::{Error, Result};

mod bus_socket;
pub mod direct;
mod wire;

pub const SERVICE: &str = "org.freedesktop.machine1";
pub const MANAGER_PATH: &str = "/org/freedesktop/machine1";
pub const MANAGER_INTERFACE: &str = "org.freedesktop.machine1.Manager";
pub const MACHINE_INTERFACE: &str = "org.freedesktop.machine1.Machine";

/// The Machine properties machnet reads, with the D-Bus type it decodes each as.
/// `Machine::from_properties` checks every value against this table before decoding, and
/// tests/dbus_interfaces.rs holds the table to dbus/*/org.freedesktop.machine1.Machine.xml.
pub const MACHINE_PROPERTIES: [(&str, &str); 7] = [
    ("Name", "s"),
    ("Class", "s"),
    ("Service", "s"),
    ("Leader", "u"),
    ("Unit", "s"),
    ("RootDirectory", "s"),
    ("TimestampMonotonic", "t"),
];
/// Read when present: systemd 262 has it; 252 (Debian 12) and 257 (Debian 13) do not.
pub const OPTIONAL_MACHINE_PROPERTIES: [(&str, &str); 1] = [("LeaderPIDFDId", "t")];

/// ListMachines' reply: (name, class, service, object path) per machine.
pub type MachineListing = Vec<(String, String, String, OwnedObjectPath)>;

/// A bus that does not answer within this is treated as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[zbus::proxy(
    interface = "org.freedesktop.machine1.Manager",
    default_service = "org.freedesktop.machine1",
    default_path = "/org/freedesktop/machine1"
)]
pub trait Manager {
    /// `machinectl list`: (name, class, service, object path) of every machine.
    fn list_machines(&self) -> zbus::Result<MachineListing>;

    /// The object path of one machine; fails with NoSuchMachine.
    fn get_machine(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// A machine was registered (`watch` follows machines as they come).
    #[zbus(signal)]
    fn machine_new(&self, machine: String, path: OwnedObjectPath) -> zbus::Result<()>;

    /// A machine was unregistered.
    #[zbus(signal)]
    fn machine_removed(&self, machine: String, path: OwnedObjectPath) -> zbus::Result<()>;
}

/// What machined says about one machine.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub class: String,
    pub service: String,
    pub leader: u32,
    pub unit: String,
    pub root_directory: String,
    pub leader_pidfd_id: Option<u64>,
    /// When machined registered the machine, in µs of CLOCK_MONOTONIC: a leader that
    /// started later cannot be the one it registered (a reused PID).
    pub registered_monotonic_us: u64,
    pub path: OwnedObjectPath,
}

/// A connection to the system bus and machined on it.
pub struct Machined {
    connection: Connection,
    manager: ManagerProxy<'static>,
}

/// A machine coming or going, from machined's signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineEvent {
    New(String),
    Removed(String),
}

impl Machined {
    /// Subscribes to MachineNew and MachineRemoved. The match rules are in place when this
    /// returns, so a machine registered afterwards is never missed: subscribe, then list.
    pub async fn machine_events(
        &self,
    ) -> Result<impl futures_util::Stream<Item = MachineEvent> + Unpin + use<>> {
        use futures_util::StreamExt;
        let new = timed_raw(self.manager.receive_machine_new())
            .await
            .map_err(|e| e.into_error("subscribing to MachineNew"))?;
        let removed = timed_raw(self.manager.receive_machine_removed())
            .await
            .map_err(|e| e.into_error("subscribing to MachineRemoved"))?;
        let new = new.filter_map(|s| async move {
            s.args()
                .ok()
                .map(|a| MachineEvent::New(a.machine().clone()))
        });
        let removed = removed.filter_map(|s| async move {
            s.args()
                .ok()
                .map(|a| MachineEvent::Removed(a.machine().clone()))
        });
        Ok(Box::pin(futures_util::stream::select(new, removed)))
    }

    pub async fn connect() -> Result<Machined> {
        let connection = timed("connecting to the system bus", Connection::system()).await?;
        let manager = ManagerProxy::new(&connection)
            .await
            .map_err(|e| unavailable("creating the machined proxy", e))?;
        Ok(Machined {
            connection,
            manager,
        })
    }

    /// Names of every machine machined knows, in its order.
    pub async fn list(&self) -> Result<Vec<(String, OwnedObjectPath)>> {
        let machines = timed("ListMachines", self.manager.list_machines()).await?;
        Ok(machines
            .into_iter()
            .map(|(name, _, _, path)| (name, path))
            .collect())
    }

    /// One machine by name; an unknown name names the machines that do exist.
    ///
    /// GetMachine's answer is the only path trusted. The properties are asked for at the
    /// path systemd would give the name in the same round trip, and kept only when
    /// GetMachine names that very path; otherwise they are asked for again at the path it
    /// named. That saves one round trip through the bus (about a tenth of `machnet routes
    /// NAME`) without ever building a path and believing it.
    pub async fn machine(&self, name: &str) -> Result<Machine> {
        let guess = expected_machine_path(name);
        let early = async {
            match &guess {
                Some(path) => Some(self.properties_at(path.clone()).await),
                None => None,
            }
        };
        let (path, early) =
            futures_util::future::join(timed_raw(self.manager.get_machine(name)), early).await;
        let path = match path {
            Ok(path) => path,
            Err(CallError::Dbus(e))
                if error_name(&e)
                    .is_some_and(|(n, _)| n == "org.freedesktop.machine1.NoSuchMachine") =>
            {
                return Err(self.unknown_machine(name).await);
            }
            Err(e) => return Err(e.into_error("GetMachine")),
        };
        match early {
            Some(Ok(all)) if Some(&path) == guess.as_ref() => Machine::from_properties(path, &all),
            _ => self.machine_at(path).await,
        }
    }

    pub async fn machine_at(&self, path: OwnedObjectPath) -> Result<Machine> {
        let all = self.properties_at(path.clone()).await?;
        Machine::from_properties(path, &all)
    }

    /// Every Machine property at one object path, in one GetAll.
    async fn properties_at(&self, path: OwnedObjectPath) -> Result<HashMap<String, OwnedVariant>> {
        let props = self.properties_proxy(path).await?;
        let interface = zbus::names::InterfaceName::from_static_str_unchecked(MACHINE_INTERFACE);
        let get_all = async { props.get_all(interface).await.map_err(zbus::Error::from) };
        timed("reading machine properties", get_all).await
    }

    async fn properties_proxy(
        &self,
        path: OwnedObjectPath,
    ) -> Result<zbus::fdo::PropertiesProxy<'_>> {
        zbus::fdo::PropertiesProxy::builder(&self.connection)
            .destination(SERVICE)
            .path(path)
            .build()
            .await
            .map_err(|e| unavailable("creating a properties proxy", e))
    }

    /// The Leader machined reports *now* for a machine (asked again after pinning), or
    /// None when the machine has gone. One property, not all of them: machined computes
    /// some of the others (State, NetworkInterfaces) on every GetAll.
    pub async fn current_leader(&self, path: &OwnedObjectPath) -> Result<Option<u32>> {
        let props = self.properties_proxy(path.clone()).await?;
        let interface = zbus::names::InterfaceName::from_static_str_unchecked(MACHINE_INTERFACE);
        let get = async {
            props
                .get(interface, "Leader")
                .await
                .map_err(zbus::Error::from)
        };
        let value = match timed("reading the machine's leader", get).await {
            Ok(value) => value,
            Err(Error::NoSuchTarget(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        value
            .downcast_ref::<u32>()
            .map(Some)
            .map_err(|_| wrong_type("Leader"))
    }

    async fn unknown_machine(&self, name: &str) -> Error {
        let mut known: Vec<String> = match self.list().await {
            Ok(list) => list.into_iter().map(|(n, _)| n).collect(),
            Err(e) => return e,
        };
        known.sort();
        Error::NoSuchTarget(unknown_machine_message(name, &known))
    }
}

/// "no machine named X; known machines: a, b (did you mean a?)".
pub fn unknown_machine_message(name: &str, known: &[String]) -> String {
    let mut msg = format!("no machine named {name:?} is registered with systemd-machined");
    if known.is_empty() {
        msg.push_str("; machined knows no machines at all");
        return msg;
    }
    msg.push_str("; known machines: ");
    msg.push_str(&known.join(", "));
    if let Some(nearest) = nearest(name, known) {
        msg.push_str(&format!(" (did you mean {nearest:?}?)"));
    }
    msg
}

/// The known name closest to `name` by edit distance, if it is close enough to be a typo.
fn nearest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= (k.chars().count().max(name.chars().count()) / 2).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl Machine {
    fn from_properties(
        path: OwnedObjectPath,
        all: &HashMap<String, OwnedVariant>,
    ) -> Result<Machine> {
        for (key, signature) in MACHINE_PROPERTIES
            .iter()
            .chain(&OPTIONAL_MACHINE_PROPERTIES)
        {
            let optional = OPTIONAL_MACHINE_PROPERTIES.iter().any(|(k, _)| k == key);
            match all.get(*key) {
                Some(value) if value.value_signature().to_string() != *signature => {
                    return Err(wrong_type(key))
                }
                None if !optional => return Err(missing(key)),
                _ => {}
            }
        }
        let string = |key: &str| -> Result<String> {
            let value = all.get(key).ok_or_else(|| missing(key))?;
            value
                .downcast_ref::<&str>()
                .map(str::to_string)
                .map_err(|_| wrong_type(key))
        };
        let leader = all
            .get("Leader")
            .ok_or_else(|| missing("Leader"))?
            .downcast_ref::<u32>()
            .map_err(|_| wrong_type("Leader"))?;
        let registered_monotonic_us = all
            .get("TimestampMonotonic")
            .ok_or_else(|| missing("TimestampMonotonic"))?
            .downcast_ref::<u64>()
            .map_err(|_| wrong_type("TimestampMonotonic"))?;
        let leader_pidfd_id = match all.get("LeaderPIDFDId") {
            Some(v) => Some(
                v.downcast_ref::<u64>()
                    .map_err(|_| wrong_type("LeaderPIDFDId"))?,
            ),
            None => None,
        };
        Ok(Machine {
            name: string("Name")?,
            class: string("Class")?,
            service: string("Service")?,
            leader,
            unit: string("Unit")?,
            root_directory: string("RootDirectory")?,
            leader_pidfd_id,
            registered_monotonic_us,
            path,
        })
    }
}

/// The object path machined gives the machine NAME: systemd's bus_label_escape (ASCII
/// letters and digits kept, every other byte `_` and two lowercase hex digits, the empty
/// name `_`) under /org/freedesktop/machine1/machine/. A guess, checked against GetMachine.
pub fn expected_machine_path(name: &str) -> Option<OwnedObjectPath> {
    let mut path = String::from("/org/freedesktop/machine1/machine/");
    if name.is_empty() {
        path.push('_');
    }
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    OwnedObjectPath::try_from(path).ok()
}

fn missing(key: &str) -> Error {
    Error::Other(format!(
        "systemd-machined sent no {key} property for a machine"
    ))
}

fn wrong_type(key: &str) -> Error {
    Error::Other(format!(
        "systemd-machined sent the {key} property with an unexpected type"
    ))
}

/// The D-Bus error name and text of an error reply (zbus reports the standard
/// org.freedesktop.DBus.Error.* names as `Error::FDO`, the others as `MethodError`).
fn error_name(e: &zbus::Error) -> Option<(String, String)> {
    use zbus::DBusError;
    match e {
        zbus::Error::MethodError(name, detail, _) => {
            Some((name.to_string(), detail.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ZBus(inner) => error_name(inner),
            other => Some((
                other.name().to_string(),
                other.description().unwrap_or_default().to_string(),
            )),
        },
        _ => None,
    }
}

enum CallError {
    Dbus(zbus::Error),
    Timeout,
}

impl CallError {
    fn into_error(self, what: &str) -> Error {
        match self {
            CallError::Timeout => Error::MachinedUnavailable {
                detail: format!("{what} got no answer within {}s", CALL_TIMEOUT.as_secs()),
            },
            CallError::Dbus(e) => unavailable(what, e),
        }
    }
}

async fn timed_raw<T>(
    call: impl std::future::Future<Output = zbus::Result<T>>,
) -> std::result::Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(CallError::Dbus),
        Err(_) => Err(CallError::Timeout),
    }
}

async fn timed<T>(
    what: &str,
    call: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<T> {
    timed_raw(call).await.map_err(|e| e.into_error(what))
}

/// Classifies a D-Bus failure: a missing bus or service means machined is unavailable,
/// a refusal means permissions, a vanished object means the machine went away.
fn unavailable(what: &str, e: zbus::Error) -> Error {
    if let Some((name, detail)) = error_name(&e) {
        match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                return Error::MachinedUnavailable {
                    detail: format!(
                        "{what}: systemd-machined is not running on the bus ({detail})"
                    ),
                }
            }
            "org.freedesktop.DBus.Error.AccessDenied"
            | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => {
                return Error::Permission(format!(
                    "{what}: the bus refused the call ({detail}); run machnet as root"
                ))
            }
            "org.freedesktop.DBus.Error.UnknownObject"
            | "org.freedesktop.DBus.Error.UnknownMethod"
            | "org.freedesktop.DBus.Error.UnknownInterface" => {
                return Error::NoSuchTarget(format!("{what}: the machine disappeared ({detail})"))
            }
            _ => {
                return Error::Other(format!(
                    "{what}: systemd-machined answered {name}: {detail}"
                ))
            }
        }
    }
    Error::MachinedUnavailable {
        detail: format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_machine() {
        let known = vec!["qbittorrent".to_string(), "corpus".to_string()];
        let msg = unknown_machine_message("qbitorrent", &known);
        assert!(msg.contains("known machines: qbittorrent, corpus"), "{msg}");
        assert!(msg.contains("did you mean \"qbittorrent\""), "{msg}");
        let msg = unknown_machine_message("zzz", &known);
        assert!(!msg.contains("did you mean"), "{msg}");
    }

    #[test]
    fn guesses_paths_as_systemd_escapes_them() {
        let path = |name| expected_machine_path(name).unwrap().to_string();
        assert_eq!(
            path("qbittorrent"),
            "/org/freedesktop/machine1/machine/qbittorrent"
        );
        assert_eq!(path(".host"), "/org/freedesktop/machine1/machine/_2ehost");
        assert_eq!(
            path("web-1.lab"),
            "/org/freedesktop/machine1/machine/web_2d1_2elab"
        );
        assert_eq!(path("a_b"), "/org/freedesktop/machine1/machine/a_5fb");
        assert_eq!(path(""), "/org/freedesktop/machine1/machine/_");
    }

    #[test]
    fn says_when_there_are_no_machines() {
        assert!(unknown_machine_message("x", &[]).contains("knows no machines"));
    }
}
