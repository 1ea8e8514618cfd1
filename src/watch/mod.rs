//! `machnet watch`: route, address and link changes of every machine as they happen,
//! following machines as machined registers and drops them.
//!
//! Order of start-up, so nothing is missed: subscribe to MachineNew/MachineRemoved, then
//! list the machines; for each, join the rtnetlink groups on a socket inside its
//! namespace, and only then read its link names (on a second socket). Every machine is a
//! task on the one runtime thread, reading its socket when the kernel says it is
//! readable; their lines go through one bounded channel to the one writer, so a slow
//! reader of our output slows the tasks, and the kernel (not machnet) drops what does not
//! fit — reported as an overrun, never silently.

pub mod format;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::commands::apply::Declared;
use crate::error::{Error, Result};
use crate::link;
use crate::machined::{MachineEvent, Machined};
use crate::netlink::NotificationError;
use crate::netns::{ExtraNamespaces, Isolation};
use crate::route::names::Names;
use format::{Change, Formatter, GROUPS};

/// Lines in flight between the machine tasks and the writer.
const CHANNEL: usize = 1024;
/// machined questions in flight at once: the bus caps pending replies per connection
/// (dbus-daemon's max_replies_per_connection), and hundreds of machines starting their
/// watch together would hit it.
const LOOKUPS: usize = 16;
/// A declared route vanishing is put back at most this often per machine before machnet
/// stops and reports that something keeps removing it.
const REAPPLY_BURST: usize = 3;
const REAPPLY_WINDOW: Duration = Duration::from_secs(60);
/// Changes come in bursts (a link going down takes its routes along): wait this long
/// after a deletion before re-applying, once.
const REAPPLY_SETTLE: Duration = Duration::from_millis(200);

pub struct Options {
    /// Only these machines (and only while they exist); all when empty.
    pub only: Vec<String>,
    pub json: bool,
    pub reapply: Option<Declared>,
    /// SO_RCVBUF for each machine's notification socket (None: the default).
    pub rcvbuf: Option<u32>,
}

/// What the machine tasks send the writer.
enum Line {
    Change {
        machine: Rc<str>,
        change: Change,
    },
    /// Something about the machine rather than its network: appeared, gone, overrun.
    Note {
        machine: Rc<str>,
        kind: &'static str,
        text: String,
    },
}

pub async fn run(machined: Machined, options: Options) -> Result<i32> {
    crate::netns::raise_open_file_limit();
    let machined = Rc::new(machined);
    // Loaded once and kept for the life of the process: every machine task formats with
    // it, and tasks must own or borrow 'static data.
    let names: &'static Names = Box::leak(Box::new(Names::load()));
    let options = Rc::new(options);
    let mut events = machined.machine_events().await?;
    let (tx, mut rx) = mpsc::channel::<Line>(CHANNEL);
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let wanted = |name: &str| {
        name != ".host" && (options.only.is_empty() || options.only.iter().any(|n| n == name))
    };

    let local = tokio::task::LocalSet::new();
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stdout = std::io::stdout().lock();
    local
        .run_until(async {
            for (name, _) in machined.list().await? {
                if wanted(&name) {
                    let task = spawn_machine(&name, &machined, names, &tx, &options, false);
                    tasks.insert(name, task);
                }
            }
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(MachineEvent::New(name)) if wanted(&name) => {
                            if let Some(old) = tasks.remove(&name) {
                                old.abort();
                            }
                            let task = spawn_machine(&name, &machined, names, &tx, &options, true);
                            tasks.insert(name, task);
                        }
                        Some(MachineEvent::Removed(name)) if wanted(&name) => {
                            if let Some(task) = tasks.remove(&name) {
                                task.abort();
                            }
                            let machine: Rc<str> = name.into();
                            write_line(&mut stdout, options.json, Line::Note {
                                machine, kind: "removed", text: "machine removed".into(),
                            })?;
                        }
                        Some(_) => {}
                        None => return Err(Error::MachinedUnavailable {
                            detail: "the system bus closed the signal subscription".into(),
                        }),
                    },
                    Some(line) = rx.recv() => write_line(&mut stdout, options.json, line)?,
                    _ = interrupt.recv() => break,
                    _ = terminate.recv() => break,
                }
            }
            Ok::<_, Error>(())
        })
        .await?;
    for task in tasks.values() {
        task.abort();
    }
    Ok(0)
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).map_err(|e| Error::io("installing a signal handler", e))
}

/// Starts the task that watches one machine. `appeared`: it was just registered.
fn spawn_machine(
    name: &str,
    machined: &Rc<Machined>,
    names: &'static Names,
    tx: &mpsc::Sender<Line>,
    options: &Rc<Options>,
    appeared: bool,
) -> tokio::task::JoinHandle<()> {
    let machine: Rc<str> = name.into();
    let (machined, tx, options) = (machined.clone(), tx.clone(), options.clone());
    tokio::task::spawn_local(async move {
        if appeared {
            let note = Line::Note {
                machine: machine.clone(),
                kind: "new",
                text: "machine new".into(),
            };
            if tx.send(note).await.is_err() {
                return;
            }
        }
        if let Err(e) = watch_machine(&machine, &machined, names, &tx, &options).await {
            let _ = tx
                .send(Line::Note {
                    machine,
                    kind: "error",
                    text: format!("not watched: {e}"),
                })
                .await;
        }
    })
}

async fn watch_machine(
    machine: &Rc<str>,
    machined: &Machined,
    names: &'static Names,
    tx: &mpsc::Sender<Line>,
    options: &Options,
) -> Result<()> {
    let namespace = {
        let _turn = lookups()
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let found = machined.machine(machine).await?;
        crate::target::pin_machine(machined, &found, ExtraNamespaces::default()).await?
    };
    if namespace.isolation == Isolation::SharesHost {
        return Err(Error::Usage(
            "it shares the host's network namespace (watch the host with ip monitor)".into(),
        ));
    }
    // Join the groups first, then read the link names: a link that appears in between is
    // in the names or in the queue, never in neither.
    let mut events = namespace.open_netlink()?;
    if let Some(bytes) = options.rcvbuf {
        events.set_receive_buffer(bytes)?;
    }
    events.subscribe(&GROUPS)?;
    let links = link::dump_links(&mut namespace.open_netlink()?)?;
    let mut formatter = Formatter::new(names, links);
    // SAFETY: the socket owns its fd, which stays open and unchanged until the AsyncFd
    // (which owns the socket) is dropped; NetlinkSocket::as_raw_fd always returns it.
    let mut socket = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| Error::io("watching a netlink socket", e.into()))?;
    let mut reapply = Reapply::default();
    loop {
        let deadline = reapply.due();
        let ready = tokio::select! {
            ready = socket.readable_mut() => Some(ready),
            _ = sleep_until(deadline) => None,
        };
        let Some(ready) = ready else {
            // A declared route vanished a moment ago: put the set back.
            let declared = options.reapply.as_ref().expect("due only with --reapply");
            if let Some(line) = reapply.run(machine, declared, machined).await {
                if tx.send(line).await.is_err() {
                    return Ok(());
                }
            }
            continue;
        };
        let mut guard = ready.map_err(|e| Error::io("watching a netlink socket", e))?;
        let mut changes = Vec::new();
        let read = guard
            .get_inner_mut()
            .read_notifications(|msg| changes.extend(formatter.format(msg)));
        let mut lines: Vec<Line> = Vec::with_capacity(changes.len());
        let mut overrun = false;
        match read {
            Ok(true) => {}
            Ok(false) => guard.clear_ready(),
            Err(NotificationError::Overrun) => overrun = true,
            Err(NotificationError::Io(e)) => {
                return Err(Error::io("reading notifications", e));
            }
        }
        for change in changes {
            // Any route gone from a declared machine: check the set a moment later.
            let declared = options.reapply.as_ref().filter(|d| d.declares(machine));
            if change.kind == "route" && change.deleted && declared.is_some() {
                reapply.schedule();
            }
            lines.push(Line::Change {
                machine: machine.clone(),
                change,
            });
        }
        if overrun {
            // What was lost cannot be known, so nothing we hold can be trusted: read the
            // machine again and print all of it, so a reader can rebuild its picture.
            lines.extend(resync(machine, &namespace, names, &mut formatter)?);
            if options
                .reapply
                .as_ref()
                .is_some_and(|d| d.declares(machine))
            {
                reapply.schedule();
            }
        }
        for line in lines {
            if tx.send(line).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// After an overrun: a note saying changes were lost, the machine's whole current state
/// (links, then addresses, then routes of every table, each as a `new` change), and a
/// note closing it. The formatter starts again from the links as they are now.
fn resync(
    machine: &Rc<str>,
    namespace: &crate::netns::PinnedNamespace,
    names: &'static Names,
    formatter: &mut Formatter<'static>,
) -> Result<Vec<Line>> {
    let note = |kind, text: String| Line::Note {
        machine: machine.clone(),
        kind,
        text,
    };
    let mut lines = vec![note(
        "overrun",
        "changes were lost: the kernel's queue for this watch overflowed (a burst of \
         changes, or output read too slowly); resyncing"
            .into(),
    )];
    let mut sock = namespace.open_netlink()?;
    // Every link first, so each line can name the others (a veth's peer, a master).
    *formatter = Formatter::new(names, link::dump_links(&mut sock)?);
    let mut changes = Vec::new();
    // A dump the kernel flags as interrupted may mix two states: read it all again.
    for _ in 0..3 {
        changes.clear();
        let mut interrupted = false;
        for (kind, request, what) in format::STATE_DUMPS {
            let end = sock.dump(*kind, request, what, |msg| {
                changes.extend(formatter.format(msg));
                Ok(())
            })?;
            interrupted |= end == crate::netlink::DumpEnd::Interrupted;
        }
        if !interrupted {
            break;
        }
    }
    let [links, addresses, routes] =
        ["link", "address", "route"].map(|k| changes.iter().filter(|c| c.kind == k).count());
    lines.push(note(
        "resync",
        format!("resync: the current state follows: {links} links, {addresses} addresses, {routes} routes"),
    ));
    lines.extend(changes.into_iter().map(|change| Line::Change {
        machine: machine.clone(),
        change,
    }));
    lines.push(note(
        "resynced",
        "resynced: changes follow as they happen".into(),
    ));
    Ok(lines)
}

/// The one limit on concurrent machined lookups (all tasks run on one thread).
fn lookups() -> &'static tokio::sync::Semaphore {
    static LOOKUP_TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOOKUPS);
    &LOOKUP_TURNS
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Drift repair for one machine, rate-limited so it cannot fight another daemon forever.
#[derive(Default)]
struct Reapply {
    due: Option<Instant>,
    /// When recent re-applies that changed something ran.
    recent: Vec<Instant>,
    /// Gave up until then: something keeps deleting the routes.
    paused_until: Option<Instant>,
}

impl Reapply {
    fn due(&self) -> Option<Instant> {
        self.due
    }

    fn schedule(&mut self) {
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.due
            .get_or_insert_with(|| Instant::now() + REAPPLY_SETTLE);
    }

    /// Re-applies if allowed; a line to print when something was put back, failed, or
    /// the fight is given up (nothing when the routes were all still there).
    async fn run(
        &mut self,
        machine: &Rc<str>,
        declared: &Declared,
        machined: &Machined,
    ) -> Option<Line> {
        self.due = None;
        let now = Instant::now();
        self.recent
            .retain(|t| now.duration_since(*t) < REAPPLY_WINDOW);
        if self.recent.len() >= REAPPLY_BURST {
            self.paused_until = Some(now + REAPPLY_WINDOW);
            self.recent.clear();
            return Some(Line::Note {
                machine: machine.clone(),
                kind: "reapply-fight",
                text: format!(
                    "declared routes were removed again after {REAPPLY_BURST} re-applies within \
                     {}s: something else is managing them; not re-applying for {}s",
                    REAPPLY_WINDOW.as_secs(),
                    REAPPLY_WINDOW.as_secs()
                ),
            });
        }
        match declared.reapply(machine, Some(machined)).await {
            Ok((false, _)) => None,
            Ok((true, report)) => {
                self.recent.push(now);
                // "NAME: 1 added, …" → "reapplied: 1 added, …"
                let report = report.trim_end();
                let what = report.split_once(": ").map_or(report, |(_, r)| r);
                Some(Line::Note {
                    machine: machine.clone(),
                    kind: "reapply",
                    text: format!("reapplied: {what}"),
                })
            }
            Err(e) => Some(Line::Note {
                machine: machine.clone(),
                kind: "reapply-failed",
                text: format!("re-applying the declared routes failed: {e}"),
            }),
        }
    }
}

fn write_line(out: &mut impl std::io::Write, json: bool, line: Line) -> Result<()> {
    let text = if json {
        let (machine, kind, action, object) = match line {
            Line::Change { machine, change } => (
                machine,
                change.kind,
                if change.deleted { "del" } else { "new" },
                change.object,
            ),
            Line::Note {
                machine,
                kind,
                text,
            } => (
                machine,
                "machine",
                kind,
                serde_json::json!({ "message": text }),
            ),
        };
        let mut s = serde_json::to_string(&serde_json::json!({
            "time": rfc3339(SystemTime::now()),
            "machine": &*machine,
            "kind": kind,
            "action": action,
            "object": object,
        }))
        .expect("an event serialises");
        s.push('\n');
        s
    } else {
        match line {
            Line::Change { machine, change } => change
                .text
                .lines()
                .map(|l| format!("{machine}: {l}\n"))
                .collect(),
            Line::Note { machine, text, .. } => format!("{machine}: {text}\n"),
        }
    };
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("writing output", e))
}

/// UTC time as `2026-11-23T21:55:01.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_470_901), "2026-11-23T21:55:01.000Z");
    }
}
