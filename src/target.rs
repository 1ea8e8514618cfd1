//! What a command points at, and turning that into a pinned network namespace.
//!
//! Targets: a machine name (asked of systemd-machined), `.host` (the namespace machnet
//! runs in), `netns:NAME` (an `ip netns` name under /run/netns) and `pid:N` (the network
//! namespace of any process).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::machined::direct::{DirectBus, LeaderNow};
use crate::machined::{Machine, Machined};
use crate::netlink::Protocol;
use crate::netns::{self, ExtraNamespaces, PidfdInfo, PinnedNamespace};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Machine(String),
    Host,
    Netns(String),
    Pid(u32),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let malformed = |why: &str| {
            format!("malformed target {s:?}: {why}; expected a machine name, .host, netns:NAME or pid:N")
        };
        if s == ".host" {
            return Ok(Target::Host);
        }
        if let Some(name) = s.strip_prefix("netns:") {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(malformed("not a namespace name"));
            }
            return Ok(Target::Netns(name.to_string()));
        }
        if let Some(pid) = s.strip_prefix("pid:") {
            return match pid.parse::<u32>() {
                Ok(pid) if pid > 0 && pid <= i32::MAX as u32 => Ok(Target::Pid(pid)),
                _ => Err(malformed("not a process id")),
            };
        }
        // machined's own rule for machine names (hostname_is_valid): 1..64 characters of
        // letters, digits, '-', '_' and '.', not starting with '.' or '-'.
        let valid = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(malformed("not a valid machine name"));
        }
        Ok(Target::Machine(s.to_string()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Machine(name) => write!(f, "machine {name}"),
            Target::Host => f.write_str(".host"),
            Target::Netns(name) => write!(f, "netns:{name}"),
            Target::Pid(pid) => write!(f, "pid:{pid}"),
        }
    }
}

/// A target held open: its namespace and, for a machine, what machined said about it.
pub struct Resolved {
    pub namespace: PinnedNamespace,
    pub machine: Option<Machine>,
}

impl Target {
    pub fn needs_machined(&self) -> bool {
        matches!(self, Target::Machine(_))
    }

    /// Pins the target's namespace (and the process it came from, if any).
    pub async fn resolve(
        &self,
        machined: Option<&Machined>,
        extra: ExtraNamespaces,
    ) -> Result<Resolved> {
        match self {
            Target::Host => Ok(Resolved {
                namespace: netns::pin_own()?,
                machine: None,
            }),
            Target::Netns(name) => Ok(Resolved {
                namespace: netns::pin_named(name)?,
                machine: None,
            }),
            Target::Pid(pid) => Ok(Resolved {
                namespace: netns::pin_process(self.to_string(), *pid, extra, |_| Ok(())).map_err(
                    |e| match e {
                        Error::StaleMachine(msg) => Error::NoSuchTarget(msg),
                        other => other,
                    },
                )?,
                machine: None,
            }),
            Target::Machine(name) => {
                let machined = machined.expect("machine targets are resolved with machined");
                let machine = machined.machine(name).await?;
                tracing::debug!(
                    leader = machine.leader,
                    unit = %machine.unit,
                    pidfd_id = ?machine.leader_pidfd_id,
                    "machined knows {name}"
                );
                let namespace = pin_machine(machined, &machine, extra).await?;
                Ok(Resolved {
                    namespace,
                    machine: Some(machine),
                })
            }
        }
    }
}

/// Pins a machine's leader and proves the pinned process is that machine's leader.
pub async fn pin_machine(
    machined: &Machined,
    machine: &Machine,
    extra: ExtraNamespaces,
) -> Result<PinnedNamespace> {
    let pinned = pin_leader(machine, extra)?;
    confirm_leader(machine, machined.current_leader(&machine.path).await?)?;
    Ok(pinned)
}

/// A machine by name, looked up and re-checked on one blocking connection
/// ([`DirectBus`]). While machined answers the re-check, the socket the command will open
/// first (`prepare`) is made. `None` when machined's answers were anything but plain
/// success: then [`Target::resolve`] asks again through zbus and words the error.
pub fn resolve_machine_directly(
    name: &str,
    extra: ExtraNamespaces,
    prepare: Option<Protocol>,
) -> Result<Option<Resolved>> {
    let maker = match prepare {
        Some(_) => Some(netns::SocketMaker::start()?),
        None => None,
    };
    let Some((mut bus, machine)) = DirectBus::machine(name)? else {
        return Ok(None);
    };
    let namespace = pin_leader(&machine, extra)?;
    let asked = bus.ask_leader(&machine.path)?;
    if let (Some(protocol), Some(maker)) = (prepare, maker) {
        namespace.prepare_netlink(protocol, maker);
    }
    match bus.leader(asked)? {
        LeaderNow::Is(leader) => confirm_leader(&machine, Some(leader))?,
        LeaderNow::Gone => confirm_leader(&machine, None)?,
        LeaderNow::Unclear => return Ok(None),
    }
    tracing::debug!(
        leader = machine.leader,
        unit = %machine.unit,
        pidfd_id = ?machine.leader_pidfd_id,
        "resolved machine {name} on the direct path"
    );
    Ok(Some(Resolved {
        namespace,
        machine: Some(machine),
    }))
}

/// Pins the leader machined named and checks it is still that machine's (its pidfd id, or
/// its cgroup); the re-check with machined follows.
fn pin_leader(machine: &Machine, extra: ExtraNamespaces) -> Result<PinnedNamespace> {
    let label = format!("machine {}", machine.name);
    netns::pin_process(label.clone(), machine.leader, extra, |info| {
        verify_leader(machine, info)
    })
    .map_err(|e| match e {
        Error::StaleMachine(why) => stale_error(machine, &label, why),
        other => other,
    })
}

fn stale_error(machine: &Machine, label: &str, why: String) -> Error {
    let prefix = format!("{label}: ");
    let why = why.strip_prefix(&prefix).unwrap_or(&why);
    Error::StaleMachine(format!(
        "machine {} is stale: {why}; machined still lists it, but it has no running leader to enter",
        machine.name
    ))
}

/// machined may have re-registered the machine with another leader while it was pinned:
/// `leader_now` is what it says after pinning (None: the machine is gone).
fn confirm_leader(machine: &Machine, leader_now: Option<u32>) -> Result<()> {
    match leader_now {
        Some(leader) if leader == machine.leader => Ok(()),
        Some(leader) => Err(stale_error(
            machine,
            &format!("machine {}", machine.name),
            format!(
                "its leader changed from {} to {leader} while machnet was pinning it; try again",
                machine.leader
            ),
        )),
        None => Err(Error::NoSuchTarget(format!(
            "machine {} was unregistered while machnet was pinning it",
            machine.name
        ))),
    }
}

/// machined 262 publishes the leader's pidfd inode (LeaderPIDFDId): compare it. Older
/// ones (252, 257) do not: then the pinned process must sit in the machine's unit's
/// cgroup, which a recycled PID of an unrelated process does not, and must have started
/// before machined registered the machine, which a recycled PID inside the unit (another
/// process of the container's scope taking the dead leader's number) has not.
fn verify_leader(machine: &Machine, info: &PidfdInfo<'_>) -> Result<()> {
    if let Some(expected) = machine.leader_pidfd_id.filter(|id| *id != 0) {
        let actual = info.inode()?;
        if actual != expected {
            return Err(Error::StaleMachine(format!(
                "PID {} now belongs to another process (pidfd id {actual}, machined registered {expected})",
                info.pid
            )));
        }
        return Ok(());
    }
    if machine.class == "host" {
        return Ok(()); // .host's leader is PID 1, in no machine unit.
    }
    let cgroups = info.cgroups()?;
    let in_unit = cgroups
        .iter()
        .any(|path| path.split('/').any(|part| part == machine.unit));
    if !in_unit {
        return Err(Error::StaleMachine(format!(
            "PID {} now belongs to another process, outside the machine's unit {} (its cgroup is {})",
            info.pid,
            machine.unit,
            cgroups.first().map(String::as_str).unwrap_or("unknown")
        )));
    }
    let clock = Clocks::now();
    let started = info.start_ticks()?;
    match started_after_registration(started, machine.registered_monotonic_us, &clock) {
        Some(late_us) => Err(Error::StaleMachine(format!(
            "PID {} now belongs to another process, which started {:.1} s after machined \
             registered the machine",
            info.pid,
            late_us as f64 / 1e6
        ))),
        None => Ok(()),
    }
}

/// What comparing a start time in boot-time ticks with a registration in monotonic µs
/// takes: the two clocks now (they differ by the time spent suspended) and the tick.
struct Clocks {
    boottime_us: u64,
    monotonic_us: u64,
    ticks_per_second: u64,
}

impl Clocks {
    fn now() -> Clocks {
        let us = |id| {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: t is a valid timespec to write to; both clocks exist since Linux 2.6.39.
            unsafe { libc::clock_gettime(id, &mut t) };
            t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
        };
        // SAFETY: sysconf has no preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Clocks {
            boottime_us: us(libc::CLOCK_BOOTTIME),
            monotonic_us: us(libc::CLOCK_MONOTONIC),
            ticks_per_second: if tick > 0 { tick as u64 } else { 100 },
        }
    }
}

/// How long after the registration the process started (µs), when it surely did: None
/// when it may have started before. A process's start is in CLOCK_BOOTTIME, which runs on
/// through suspend; the registration in CLOCK_MONOTONIC, which does not. All the suspend
/// time so far (boottime - monotonic now) is taken off the start, so a leader that
/// started before the machine was registered is never refused, whenever the host slept.
/// Ticks round the start down, which errs the same way.
fn started_after_registration(start_ticks: u64, registered_us: u64, clock: &Clocks) -> Option<u64> {
    let start_boot_us = start_ticks.saturating_mul(1_000_000) / clock.ticks_per_second;
    let suspended_us = clock.boottime_us.saturating_sub(clock.monotonic_us);
    let start_monotonic_at_most = start_boot_us.saturating_sub(suspended_us);
    // One tick of slack: the registration's clock and the tick count are read apart.
    let slack = 1_000_000 / clock.ticks_per_second;
    start_monotonic_at_most
        .checked_sub(registered_us.saturating_add(slack))
        .filter(|late| *late > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_start_surely_after_the_registration_counts_as_another_process() {
        let clock = |suspended_us: u64| Clocks {
            boottime_us: 500_000_000 + suspended_us,
            monotonic_us: 500_000_000,
            ticks_per_second: 100,
        };
        // Registered at 100 s monotonic. A leader started at 99.5 s is the one.
        assert_eq!(
            started_after_registration(9_950, 100_000_000, &clock(0)),
            None
        );
        // Started in the same tick as the registration: not refused.
        assert_eq!(
            started_after_registration(10_000, 100_000_000, &clock(0)),
            None
        );
        // Started at 130 s: a PID reused long after.
        assert_eq!(
            started_after_registration(13_000, 100_000_000, &clock(0)),
            Some(29_990_000)
        );
        // The host slept 60 s before the leader started at 150 s boottime (= 90 s
        // monotonic): before the registration, never refused.
        assert_eq!(
            started_after_registration(15_000, 100_000_000, &clock(60_000_000)),
            None
        );
    }

    #[test]
    fn parses_every_kind_of_target() {
        assert_eq!(
            "qbittorrent".parse(),
            Ok(Target::Machine("qbittorrent".into()))
        );
        assert_eq!(".host".parse(), Ok(Target::Host));
        assert_eq!("netns:blue".parse(), Ok(Target::Netns("blue".into())));
        assert_eq!("pid:42".parse(), Ok(Target::Pid(42)));
    }

    #[test]
    fn rejects_malformed_targets() {
        for bad in [
            "",
            "pid:",
            "pid:0",
            "pid:x",
            "netns:",
            "netns:../x",
            "a/b",
            ".x",
            "-x",
            "a b",
        ] {
            let err = bad.parse::<Target>().unwrap_err();
            assert!(err.starts_with("malformed target"), "{bad}: {err}");
        }
    }
}
