//! `machnet apply FILE`: bring each machine's routes to the set FILE declares.
//!
//! Everything that can be checked without the kernel is checked before any machine is
//! touched: the file, every route in it, the machines asked for. Then each machine in
//! turn: wait for it (--wait), pin it, lock its namespace, read, plan, and apply or show
//! the plan. A machine that fails is put back as it was and the others still run.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::apply::plan::{self, Conflict, Found, Plan, Step};
use crate::apply::wanted::WantedRoutes;
use crate::apply::{self, lock};
use crate::cli::ApplyArgs;
use crate::error::{exit, Error, Result};
use crate::link::{self, LinkNames};
use crate::machined::Machined;
use crate::netlink::NetlinkSocket;
use crate::netns::{ExtraNamespaces, Isolation, PinnedNamespace};
use crate::route::message::Route;
use crate::route::names::Names;
use crate::route::print::{Format, RoutePrinter, ShowOptions};
use crate::route::spec::RouteSpec;
use crate::routeset::{self, DeclaredRoute, RouteSink};
use crate::target::Target;

use super::route::MACHNET_PROTOCOL;

/// How often --wait looks again for a machine or its devices.
const WAIT_STEP: Duration = Duration::from_millis(100);
/// Below this many steps a progress line is not worth drawing.
const PROGRESS_MIN_STEPS: usize = 2000;

/// What to do with each machine's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    DryRun,
    Check,
}

/// One machine's declared routes, read and encoded.
#[derive(Clone)]
struct MachineSet {
    name: String,
    target: Target,
    wanted: WantedRoutes,
}

pub async fn run(args: ApplyArgs) -> Result<i32> {
    let names = Names::load();
    let owner = match &args.protocol {
        Some(p) => names.protocol_id(p).ok_or_else(|| {
            Error::Usage(format!("unknown routing protocol {p:?} for --protocol"))
        })?,
        None => MACHNET_PROTOCOL,
    };
    let mode = match (args.dry_run, args.check) {
        (true, _) => Mode::DryRun,
        (_, true) => Mode::Check,
        _ => Mode::Apply,
    };
    // First of all, so no stop signal ever finds apply unprepared (reading a large set
    // takes a while, and a signal then must end it cleanly, not kill it).
    if mode == Mode::Apply {
        apply::interrupt::catch_stop_signals()?;
    }
    let (machines, declared) = read_machines(&args.file, &args.machine, &names, owner)?;
    for name in &args.machine {
        if !declared.contains(name) {
            return Err(Error::Usage(format!(
                "--machine {name}: {} declares no such machine (it declares: {})",
                args.file.display(),
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
    }
    if machines.is_empty() {
        eprintln!(
            "machnet: {} declares no machines; nothing to do",
            args.file.display()
        );
        return Ok(0);
    }
    if machines.iter().any(|m| m.target != Target::Host) {
        crate::netns::require_privileges()?;
    }

    let machined = if machines.iter().any(|m| m.target.needs_machined()) {
        Some(Machined::connect().await?)
    } else {
        None
    };
    let wait = args.wait.map(Duration::from_secs_f64);
    let ctx = Context {
        names: &names,
        owner,
        adopt: args.adopt,
        allow_host: args.allow_host,
        mode,
        stoppable: mode == Mode::Apply,
    };

    let mut worst = 0;
    let mut out_of_sync = false;
    let count = machines.len();
    for (i, machine) in machines.into_iter().enumerate() {
        if let Some(signal) = ctx.stopped() {
            // Machines finished before the signal keep their complete new set: each is
            // applied whole or not at all.
            eprintln!(
                "machnet: stopped by {} before {}: it and {} machine{} after it were not touched",
                apply::interrupt::signal_name(signal),
                machine.name,
                count - i - 1,
                plural(count - i - 1)
            );
            return Ok(128 + signal);
        }
        match apply_machine(&ctx, machine, machined.as_ref(), wait).await {
            Ok((changes_needed, report)) => {
                super::write_stdout(report.as_bytes())?;
                out_of_sync |= changes_needed;
            }
            Err(e @ Error::Interrupted { .. }) => {
                eprintln!("machnet: {e}");
                if count - i > 1 {
                    eprintln!(
                        "machnet: note: the {} machine{} after it were not touched",
                        count - i - 1,
                        plural(count - i - 1)
                    );
                }
                return Ok(e.exit_code());
            }
            Err(e) => {
                eprintln!("machnet: {e}");
                if worst == 0 {
                    worst = e.exit_code();
                }
            }
        }
    }
    if worst != 0 {
        return Ok(worst);
    }
    Ok(if mode == Mode::Check && out_of_sync {
        exit::OUT_OF_SYNC
    } else {
        0
    })
}

struct Context<'a> {
    names: &'a Names,
    owner: u8,
    adopt: bool,
    allow_host: bool,
    mode: Mode,
    /// SIGTERM/SIGINT/SIGHUP stop this apply and put the machine back (interrupt.rs):
    /// the command's own apply. watch --reapply leaves its signals to watch.
    stoppable: bool,
}

impl Context<'_> {
    fn stopped(&self) -> Option<i32> {
        self.stoppable.then(apply::interrupt::caught).flatten()
    }
}

/// Reads the machines to work on (all in the file, or those in `only`), each route parsed
/// and encoded as it is read: a malformed route anywhere stops everything before anything
/// is touched. Returns them by name, and every machine name the file declares.
fn read_machines(
    file: &std::path::Path,
    only: &[String],
    names: &Names,
    owner: u8,
) -> Result<(Vec<MachineSet>, Vec<String>)> {
    let mut collector = Collector {
        names,
        owner,
        only,
        file,
        declared: Vec::new(),
        machines: Vec::new(),
        keeping: false,
    };
    routeset::read(file, &mut collector)?;
    let mut machines = collector.machines;
    // The order reports come in, whatever the order of the file.
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let mut declared = collector.declared;
    declared.sort();
    Ok((machines, declared))
}

/// Takes the machines and routes a route set hands out as it is read.
struct Collector<'a> {
    names: &'a Names,
    owner: u8,
    only: &'a [String],
    file: &'a std::path::Path,
    declared: Vec<String>,
    machines: Vec<MachineSet>,
    /// Whether the machine being read is one to keep.
    keeping: bool,
}

impl RouteSink for Collector<'_> {
    fn machine(&mut self, name: &str) -> std::result::Result<(), String> {
        self.declared.push(name.to_string());
        self.keeping = self.only.is_empty() || self.only.iter().any(|o| o == name);
        if !self.keeping {
            return Ok(());
        }
        let target: Target = name
            .parse()
            .map_err(|e| format!("{}: machine {name:?}: {e}", self.file.display()))?;
        self.machines.push(MachineSet {
            name: name.to_string(),
            target,
            wanted: WantedRoutes::default(),
        });
        Ok(())
    }

    fn route(&mut self, route: DeclaredRoute) -> std::result::Result<(), String> {
        if !self.keeping {
            return Ok(());
        }
        let machine = self
            .machines
            .last_mut()
            .expect("a machine begins before its routes");
        let index = machine.wanted.len();
        route
            .to_spec(self.names)
            .map(with_explicit_metric)
            .and_then(|spec| machine.wanted.push(&spec, self.owner))
            .map_err(|e| {
                format!(
                    "{}: machine {}, route {} (\"{}\"): {e}",
                    self.file.display(),
                    machine.name,
                    index + 1,
                    route.words().join(" ")
                )
            })
    }
}

/// An IPv6 route without a metric gets the kernel's default (1024) written out, so the
/// request that undoes its add deletes exactly it: an IPv6 delete without a metric matches
/// the prefix at any metric.
fn with_explicit_metric(mut spec: RouteSpec) -> RouteSpec {
    if spec.family == crate::route::message::AF_INET6 && spec.metric.is_none() {
        spec.metric = Some(1024);
    }
    spec
}

/// Brings one machine to its set (or shows the plan). Returns whether changes were (or,
/// for --dry-run/--check, would be) needed, and what to tell the user.
async fn apply_machine(
    ctx: &Context<'_>,
    machine: MachineSet,
    machined: Option<&Machined>,
    wait: Option<Duration>,
) -> Result<(bool, String)> {
    let devices: HashSet<&str> = machine
        .wanted
        .devices()
        .iter()
        .map(String::as_str)
        .collect();
    let (namespace, mut sock, links) =
        wait_for_machine(ctx, &machine, machined, &devices, wait).await?;
    drop(devices);
    let label = &namespace.label;
    let wanted = machine
        .wanted
        .resolve(&links)
        .map_err(|e| Error::NoSuchTarget(format!("{label}: {e}; nothing was changed")))?;

    // Read-only modes look without the lock: they change nothing and must not wait.
    let _lock = match ctx.mode {
        Mode::Apply => Some(lock::lock_namespace(namespace.inode)?),
        _ => None,
    };
    let key_hashes = wanted.key_hashes();
    let found = apply::snapshot(&mut sock, &key_hashes, ctx.owner)?;
    let plan = plan::plan(&wanted, key_hashes, &found, ctx.owner, ctx.adopt)
        .map_err(|conflicts| conflict_error(ctx, label, &conflicts, &wanted, &found, &links))?;

    let printer = printer(ctx.names, &links);
    let (added, replaced, deleted) = plan.counts();
    let mut out = Vec::new();
    match ctx.mode {
        Mode::DryRun | Mode::Check => {
            write_plan(&mut out, &machine.name, &plan, &wanted, &found, &printer);
            return Ok((!plan.is_empty(), String::from_utf8_lossy(&out).into_owned()));
        }
        Mode::Apply if plan.is_empty() => {
            out.extend(
                format!(
                    "{}: in sync, nothing changed ({} declared route{} in place)\n",
                    machine.name,
                    plan.in_sync,
                    plural(plan.in_sync)
                )
                .as_bytes(),
            );
            return Ok((false, String::from_utf8_lossy(&out).into_owned()));
        }
        Mode::Apply => {}
    }

    if let Some(signal) = ctx.stopped() {
        return Err(Error::Interrupted {
            signal,
            message: format!(
                "{label}: stopped by {} before any change; nothing was changed",
                apply::interrupt::signal_name(signal)
            ),
        });
    }
    let what = format!("applying routes to {label}");
    let mut progress = Progress::new(&machine.name, plan.steps.len());
    let result = apply::execute(
        &mut sock,
        &plan,
        &wanted,
        &found,
        &what,
        |done, total| progress.show(done, total),
        || ctx.stopped(),
    );
    progress.finish();
    if let Err(refused) = result {
        return Err(refusal_error(label, &refused, &wanted, &found, &printer));
    }
    out.extend(
        format!(
            "{}: {added} added, {replaced} replaced, {deleted} deleted; {} already in place\n",
            machine.name, plan.in_sync
        )
        .as_bytes(),
    );
    Ok((true, String::from_utf8_lossy(&out).into_owned()))
}

/// A route set read for `watch --reapply`: each machine's routes parsed once.
pub struct Declared {
    names: Names,
    machines: Vec<MachineSet>,
}

impl Declared {
    pub fn load(file: &std::path::Path) -> Result<Declared> {
        let names = Names::load();
        let (machines, _) = read_machines(file, &[], &names, MACHNET_PROTOCOL)?;
        Ok(Declared { names, machines })
    }

    pub fn declares(&self, machine: &str) -> bool {
        self.machines.iter().any(|m| m.name == machine)
    }

    /// Applies the set to one machine, as `machnet apply FILE --machine NAME` would.
    /// Returns whether anything changed, and the one-line report.
    pub async fn reapply(
        &self,
        machine: &str,
        machined: Option<&Machined>,
    ) -> Result<(bool, String)> {
        let Some(set) = self.machines.iter().find(|m| m.name == machine) else {
            return Ok((false, String::new()));
        };
        let ctx = Context {
            names: &self.names,
            owner: MACHNET_PROTOCOL,
            adopt: false,
            allow_host: false,
            mode: Mode::Apply,
            stoppable: false,
        };
        // A copy: the set is applied again at every fight, with the links of the moment.
        apply_machine(&ctx, set.clone(), machined, None).await
    }
}

/// Pins the machine and checks its declared devices exist. With `wait`, a machine not (yet)
/// registered, stale, or missing a device is looked for again until the time is up.
async fn wait_for_machine(
    ctx: &Context<'_>,
    machine: &MachineSet,
    machined: Option<&Machined>,
    devices: &HashSet<&str>,
    wait: Option<Duration>,
) -> Result<(PinnedNamespace, NetlinkSocket, LinkNames)> {
    let deadline = wait.map(|w| Instant::now() + w);
    let waited = || {
        wait.map_or(String::new(), |w| {
            format!(" after waiting {}s", w.as_secs_f64())
        })
    };
    loop {
        let attempt = async {
            let namespace = machine
                .target
                .resolve(machined, ExtraNamespaces::default())
                .await?
                .namespace;
            if namespace.isolation == Isolation::SharesHost && !ctx.allow_host {
                return Err(Error::Usage(format!(
                    "refusing to apply routes to {}: it shares the host's network namespace, so \
                     this would change the host's own routes; pass --allow-host if that is what \
                     you mean",
                    namespace.label
                )));
            }
            let mut sock = namespace.open_netlink()?;
            let links = link::link_names(&mut sock)?;
            let mut missing: Vec<&str> = devices
                .iter()
                .copied()
                .filter(|d| links.index_of(d).is_none())
                .collect();
            missing.sort_unstable();
            if !missing.is_empty() {
                return Err(Error::NoSuchTarget(format!(
                    "{}: no device {} here{} (devices: {}); nothing was changed",
                    namespace.label,
                    missing.join(", "),
                    waited(),
                    links.names_sorted().join(", ")
                )));
            }
            Ok((namespace, sock, links))
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(
                e @ (Error::NoSuchTarget(_)
                | Error::StaleMachine(_)
                | Error::MachinedUnavailable { .. }),
            ) => match deadline {
                Some(deadline) if Instant::now() < deadline => {
                    tracing::debug!("waiting for {}: {e}", machine.name);
                    tokio::time::sleep(WAIT_STEP).await;
                }
                Some(_) => {
                    return Err(match e {
                        Error::NoSuchTarget(msg) if !msg.contains("after waiting") => {
                            Error::NoSuchTarget(format!("{msg}{}", waited()))
                        }
                        other => other,
                    })
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

fn printer<'a>(names: &'a Names, links: &'a LinkNames) -> RoutePrinter<'a> {
    RoutePrinter {
        names,
        links,
        options: ShowOptions { all_tables: true },
        format: Format::Text,
        hz: super::routes::user_hz(),
    }
}

/// One route as `ip route show` prints it, without the trailing space and newline.
fn route_line(printer: &RoutePrinter<'_>, message: &[u8]) -> String {
    let mut line = Vec::new();
    match Route::parse(message) {
        Ok(route) => printer.print(&route, &mut line),
        Err(e) => line.extend_from_slice(format!("(undecodable route: {})", e.0).as_bytes()),
    }
    String::from_utf8_lossy(&line).trim_end().to_string()
}

/// The plan as a diff in `ip route` syntax: `+` added, `~` replaced (with what it was),
/// `-` deleted. Lines starting with `#` are comments.
fn write_plan(
    out: &mut Vec<u8>,
    machine: &str,
    plan: &Plan,
    wanted: &WantedRoutes,
    found: &[Found],
    printer: &RoutePrinter<'_>,
) {
    let (added, replaced, deleted) = plan.counts();
    let header = if plan.is_empty() {
        format!(
            "# {machine}: in sync ({} declared route{} in place)\n",
            plan.in_sync,
            plural(plan.in_sync)
        )
    } else {
        format!(
            "# {machine}: {added} to add, {replaced} to replace, {deleted} to delete; {} in place\n",
            plan.in_sync
        )
    };
    out.extend_from_slice(header.as_bytes());
    for line in plan_lines(plan, wanted, found, printer) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// Each step of the plan as a diff line (a replace also gets a `#   was:` line).
fn plan_lines(
    plan: &Plan,
    wanted: &WantedRoutes,
    found: &[Found],
    printer: &RoutePrinter<'_>,
) -> Vec<String> {
    plan.steps
        .iter()
        .map(|step| match *step {
            Step::Add(w) => format!("+ {}", route_line(printer, wanted.request(w as usize))),
            Step::Replace { new, old } => format!(
                "~ {}\n#   was: {}",
                route_line(printer, wanted.request(new as usize)),
                route_line(printer, &found[old as usize].message)
            ),
            Step::Delete(f) => format!("- {}", route_line(printer, &found[f as usize].message)),
        })
        .collect()
}

/// For `audit --expect FILE`: how each machine of the route set differs from it, as diff
/// lines (`+`, `~`, `-`). A machine that cannot be read or planned gives its error.
pub async fn drift(
    file: &std::path::Path,
    only: &[String],
    machined: Option<&Machined>,
) -> Result<Vec<(String, Result<Vec<String>>)>> {
    let names = Names::load();
    let (machines, _) = read_machines(file, only, &names, MACHNET_PROTOCOL)?;
    let ctx = Context {
        names: &names,
        owner: MACHNET_PROTOCOL,
        adopt: false,
        allow_host: true,
        mode: Mode::Check,
        stoppable: false,
    };
    let mut out = Vec::new();
    for machine in machines {
        let name = machine.name.clone();
        let lines = async {
            let devices = HashSet::new();
            let (namespace, mut sock, links) =
                wait_for_machine(&ctx, &machine, machined, &devices, None).await?;
            let wanted = machine
                .wanted
                .resolve(&links)
                .map_err(|e| Error::NoSuchTarget(format!("{}: {e}", namespace.label)))?;
            let key_hashes = wanted.key_hashes();
            let found = apply::snapshot(&mut sock, &key_hashes, ctx.owner)?;
            let plan = plan::plan(&wanted, key_hashes, &found, ctx.owner, true)
                .map_err(|_| Error::Usage("the route set declares one route key twice; `machnet apply --check` says which".into()))?;
            let printer = printer(&names, &links);
            Ok(plan_lines(&plan, &wanted, &found, &printer))
        }
        .await;
        out.push((name, lines));
    }
    Ok(out)
}

fn conflict_error(
    ctx: &Context<'_>,
    label: &str,
    conflicts: &[Conflict],
    wanted: &WantedRoutes,
    found: &[Found],
    links: &LinkNames,
) -> Error {
    let printer = printer(ctx.names, links);
    let described: Vec<String> = conflicts
        .iter()
        .map(|c| match *c {
            Conflict::Foreign {
                wanted: w,
                found: f,
            } => format!(
                "declared route {} ({}) has the key of a route machnet does not own ({}); pass \
                 --adopt to replace it, or give the declared route another metric or table",
                w + 1,
                route_line(&printer, wanted.request(w)),
                route_line(&printer, &found[f].message),
            ),
            Conflict::SameKey { first, second } => format!(
                "declared routes {} and {} have one key (prefix, table, metric), so the second \
                 would overwrite the first ({})",
                first + 1,
                second + 1,
                route_line(&printer, wanted.request(second)),
            ),
        })
        .collect();
    Error::Conflict(format!(
        "{label}: {}; nothing was changed",
        described.join("; ")
    ))
}

fn refusal_error(
    label: &str,
    refused: &apply::Refused,
    wanted: &WantedRoutes,
    found: &[Found],
    printer: &RoutePrinter<'_>,
) -> Error {
    let step = match refused.step {
        None => "writing to the netlink socket".to_string(),
        Some(Step::Add(w)) => format!(
            "adding declared route {} ({})",
            w + 1,
            route_line(printer, wanted.request(w as usize))
        ),
        Some(Step::Replace { new, .. }) => format!(
            "replacing with declared route {} ({})",
            new + 1,
            route_line(printer, wanted.request(new as usize))
        ),
        Some(Step::Delete(f)) => format!(
            "deleting undeclared route {}",
            route_line(printer, &found[f as usize].message)
        ),
    };
    let mut others = match refused.also_refused {
        0 => String::new(),
        n => format!(" ({n} more step{} refused too)", plural(n)),
    };
    if refused.unanswered > 0 {
        let n = refused.unanswered;
        others.push_str(&format!(
            "; whether the kernel made {n} more change{} is unknown: check with `machnet apply --dry-run`",
            plural(n)
        ));
    }
    let undo = &refused.undo;
    let restored = match (&undo.cut_short, undo.failures.len()) {
        (None, 0) if refused.unanswered > 0 => format!(
            "the {} step{} known to be done in {label} were put back",
            undo.undone,
            plural(undo.undone)
        ),
        (None, 0) => format!(
            "everything changed in {label} was put back ({} step{} undone)",
            undo.undone,
            plural(undo.undone)
        ),
        (cut_short, failures) => {
            let mut failed: Vec<String> = undo
                .failures
                .iter()
                .map(|(step, e)| format!("{step:?}: {e}"))
                .collect();
            let mut count = failures;
            if let Some((left, e)) = cut_short {
                count += left;
                failed.push(format!(
                    "{left} step{} not undone, the socket failed: {e}",
                    plural(*left)
                ));
            }
            format!(
                "putting {label} back FAILED for {count} step{} ({}); its routes are now \
                 partly applied: check with `machnet apply --dry-run`",
                plural(count),
                failed.join("; ")
            )
        }
    };
    if let Error::Interrupted { signal, message } = &refused.error {
        return Error::Interrupted {
            signal: *signal,
            message: format!("{label}: {message}; {restored}"),
        };
    }
    let context = format!("{label}: {step} failed");
    match &refused.error {
        Error::Kernel { source, says, .. } => Error::Kernel {
            context,
            source: std::io::Error::from_raw_os_error(source.raw_os_error().unwrap_or(libc::EIO)),
            says: format!("{says}{others}; {restored}"),
        },
        other => Error::Other(format!("{context}: {other}{others}; {restored}")),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A one-line progress count on a terminal's stderr for large applies; silent otherwise.
struct Progress<'a> {
    machine: &'a str,
    enabled: bool,
    last: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(machine: &'a str, steps: usize) -> Progress<'a> {
        Progress {
            machine,
            enabled: steps >= PROGRESS_MIN_STEPS && std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, done: usize, total: usize) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        eprint!("\r{}: {done}/{total} routes", self.machine);
    }

    fn finish(&self) {
        if self.enabled && self.last.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}
