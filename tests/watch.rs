//! `machnet watch` against the real testbed: changes made in machines while it runs must
//! all appear, with the right machine, in order per machine; route and address lines as
//! `ip monitor` prints them in the same namespace at the same time.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{machnet, ok, run, testbed, Testbed};
use serde_json::Value;

static MACHINES: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    MACHINES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running process whose stdout lines arrive on a channel; killed (by PID) on drop.
struct Lines {
    child: Child,
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn start(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `pred` (bounded: a change that never shows up is a
    /// failure, not a hang). Returns the index of that line in `seen`.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        if let Some(i) = self.seen.iter().position(|l| pred(l)) {
            return i;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line);
                    if pred(self.seen.last().unwrap()) {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!("never saw {what}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) of the process this test started.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch(args: &[&str]) -> Lines {
    let mut cmd = Command::new(common::machnet_bin());
    cmd.arg("watch").args(args);
    Lines::start(cmd)
}

fn ip_monitor(bed: &Testbed, machine: &str) -> Lines {
    let mut cmd = Command::new("nsenter");
    cmd.args([
        "-t",
        &bed.leader(machine).to_string(),
        "-n",
        "ip",
        "monitor",
        "route",
        "address",
    ]);
    Lines::start(cmd)
}

fn ip(bed: &Testbed, machine: &str, args: &[&str]) {
    ok(bed.ip(machine, args), &format!("ip {args:?} in {machine}"));
}

/// Adds and deletes a marker route (a blackhole) in `machine` until every listener has
/// shown its deletion: from then on all of them are listening. A watcher starts listening
/// a moment after it starts, so one marker may be missed; the loop is bounded.
fn handshake(bed: &Testbed, machine: &str, lines: &mut [&mut Lines], tag: u8) {
    let prefix = format!("198.51.100.{tag}");
    let deleted = format!("Deleted blackhole {prefix} ");
    for _ in 0..100 {
        ip(bed, machine, &["route", "add", "blackhole", &prefix]);
        ip(bed, machine, &["route", "del", "blackhole", &prefix]);
        std::thread::sleep(Duration::from_millis(100));
        let mut all = true;
        for l in lines.iter_mut() {
            while let Ok(line) = l.rx.try_recv() {
                l.seen.push(line);
            }
            all &= l.seen.iter().any(|s| s.contains(&deleted));
        }
        if all {
            return;
        }
    }
    panic!("the watchers never showed marker {prefix}");
}

/// The index just past the last marker deletion with `tag` (where a test's own changes
/// begin or end).
fn after_marker(l: &Lines, tag: u8) -> usize {
    let deleted = format!("Deleted blackhole 198.51.100.{tag} ");
    l.seen
        .iter()
        .rposition(|s| s.contains(&deleted))
        .expect("marker seen")
        + 1
}

#[test]
fn routes_and_addresses_print_as_ip_monitor_prints_them() {
    let _l = lock();
    let bed = testbed();
    bed.settle_ipv6("qbittorrent");
    let mut ours = watch(&["qbittorrent"]);
    let mut theirs = ip_monitor(&bed, "qbittorrent");
    handshake(&bed, "qbittorrent", &mut [&mut ours, &mut theirs], 1);
    let (start_ours, start_theirs) = (after_marker(&ours, 1), after_marker(&theirs, 1));

    ip(
        &bed,
        "qbittorrent",
        &[
            "route",
            "add",
            "10.44.0.0/16",
            "via",
            "10.77.1.1",
            "metric",
            "7",
        ],
    );
    ip(
        &bed,
        "qbittorrent",
        &[
            "route",
            "add",
            "unreachable",
            "10.45.0.0/16",
            "table",
            "100",
        ],
    );
    ip(
        &bed,
        "qbittorrent",
        &["-6", "route", "add", "fd44::/64", "via", "fd77:1::1"],
    );
    ip(
        &bed,
        "qbittorrent",
        &["addr", "add", "10.77.1.9/24", "dev", "host0"],
    );
    ip(
        &bed,
        "qbittorrent",
        &["addr", "add", "fd77:1::9/64", "dev", "host0", "nodad"],
    );
    ip(&bed, "qbittorrent", &["route", "del", "10.44.0.0/16"]);
    ip(
        &bed,
        "qbittorrent",
        &["route", "del", "10.45.0.0/16", "table", "100"],
    );
    ip(&bed, "qbittorrent", &["-6", "route", "del", "fd44::/64"]);
    ip(
        &bed,
        "qbittorrent",
        &["addr", "del", "10.77.1.9/24", "dev", "host0"],
    );
    ip(
        &bed,
        "qbittorrent",
        &["addr", "del", "fd77:1::9/64", "dev", "host0"],
    );
    handshake(&bed, "qbittorrent", &mut [&mut ours, &mut theirs], 2);
    // Up to (and without) the first end marker.
    let end = |l: &Lines| {
        l.seen
            .iter()
            .position(|s| s.contains("blackhole 198.51.100.2 "))
            .unwrap()
    };
    let (end_ours, end_theirs) = (end(&ours), end(&theirs));

    let ours: Vec<String> = ours.seen[start_ours..end_ours]
        .iter()
        .map(|l| {
            l.strip_prefix("qbittorrent: ")
                .unwrap_or_else(|| panic!("line without the machine: {l:?}"))
                .to_string()
        })
        .collect();
    let theirs = &theirs.seen[start_theirs..end_theirs];
    assert_eq!(ours, theirs, "machnet watch vs ip monitor route address");
    assert!(ours.len() >= 16, "every change showed: {ours:#?}");
}

#[test]
fn every_machine_in_order_and_machines_coming_and_going() {
    let _l = lock();
    let bed = testbed();
    let mut w = watch(&[]);
    handshake(&bed, "qbittorrent", &mut [&mut w], 3);
    handshake(&bed, "empty", &mut [&mut w], 4);

    // Interleaved changes in two machines: each machine's own lines keep their order.
    for i in 0..5 {
        ip(
            &bed,
            "qbittorrent",
            &["route", "add", "blackhole", &format!("192.0.2.{i}")],
        );
        ip(
            &bed,
            "empty",
            &["route", "add", "unreachable", &format!("192.0.2.{i}")],
        );
    }
    ip(&bed, "empty", &["link", "set", "lo", "mtu", "9000"]);
    for i in 0..5 {
        ip(
            &bed,
            "qbittorrent",
            &["route", "del", "blackhole", &format!("192.0.2.{i}")],
        );
        ip(
            &bed,
            "empty",
            &["route", "del", "unreachable", &format!("192.0.2.{i}")],
        );
    }
    ip(&bed, "empty", &["link", "set", "lo", "mtu", "65536"]);
    w.until("the last change", |l| {
        l.starts_with("empty: lo ") && l.ends_with("mtu 65536")
    });
    let of = |machine: &str, needle: &str| -> Vec<String> {
        w.seen
            .iter()
            .filter(|l| l.starts_with(&format!("{machine}: ")) && l.contains(needle))
            .cloned()
            .collect()
    };
    let expect = |machine: &str, kind: &str| -> Vec<String> {
        (0..5)
            .map(|i| format!("{machine}: {kind} 192.0.2.{i} "))
            .chain((0..5).map(|i| format!("{machine}: Deleted {kind} 192.0.2.{i} ")))
            .collect()
    };
    assert_eq!(
        of("qbittorrent", "192.0.2."),
        expect("qbittorrent", "blackhole")
    );
    assert_eq!(of("empty", "192.0.2."), expect("empty", "unreachable"));
    let lo: Vec<String> = of("empty", ": lo ");
    assert!(lo.iter().any(|l| l.ends_with("mtu 9000")), "{lo:?}");

    // A machine registered while watching is watched from then on; its removal reported.
    let script = format!("{}/tests/testbed/late-machine", env!("CARGO_MANIFEST_DIR"));
    let mut register = Command::new(script);
    register.arg("watched");
    let leader: i32 = ok(run(register), "late-machine").trim().parse().unwrap();
    let guard = common::MachineLeader {
        pid: leader,
        machine: Some("watched".into()),
    };
    w.until("the new machine", |l| l == "watched: machine new");
    // The watch of a new machine starts a moment after the signal: change until seen.
    let ip_in_new = |args: &[&str]| {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &leader.to_string(), "-n", "ip"]).args(args);
        ok(run(cmd), "ip in the new machine");
    };
    let mut n = 0;
    loop {
        ip_in_new(&["route", "add", "blackhole", &format!("203.0.113.{n}")]);
        let shown = format!("watched: blackhole 203.0.113.{n} ");
        let seen = (0..20).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            while let Ok(line) = w.rx.try_recv() {
                w.seen.push(line);
            }
            w.seen.contains(&shown)
        });
        if seen || n == 20 {
            assert!(
                seen,
                "changes in the new machine never showed: {:#?}",
                w.seen
            );
            break;
        }
        n += 1;
    }
    drop(guard); // kills the leader and unregisters the machine
    w.until("the removal", |l| l == "watched: machine removed");

    // SIGTERM ends it cleanly.
    w.signal(libc::SIGTERM);
    let status = w.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit on SIGTERM");
}

#[test]
fn json_lines_carry_time_machine_kind_action_and_the_ip_json_object() {
    let _l = lock();
    let bed = testbed();
    let mut w = watch(&["--json", "qbittorrent"]);
    let is_marker = |l: &str, dst: &str| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["object"]["dst"] == dst)
    };
    for _ in 0..100 {
        ip(
            &bed,
            "qbittorrent",
            &["route", "add", "blackhole", "198.51.100.5"],
        );
        ip(
            &bed,
            "qbittorrent",
            &["route", "del", "blackhole", "198.51.100.5"],
        );
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(line) = w.rx.try_recv() {
            w.seen.push(line);
        }
        if w.seen.iter().any(|l| is_marker(l, "198.51.100.5")) {
            break;
        }
    }
    ip(
        &bed,
        "qbittorrent",
        &["route", "add", "10.46.0.0/16", "via", "10.77.1.1"],
    );
    ip(&bed, "qbittorrent", &["route", "del", "10.46.0.0/16"]);
    let i = w.until("deleted 10.46", |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["object"]["dst"] == "10.46.0.0/16" && v["action"] == "del")
    });
    let event: Value = serde_json::from_str(&w.seen[i]).unwrap();
    assert_eq!(event["machine"], "qbittorrent");
    assert_eq!(event["kind"], "route");
    let time = event["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    // The object is what `ip -j route` gives for that route.
    let added = w.seen.iter().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["object"]["dst"] == "10.46.0.0/16" && v["action"] == "new").then_some(v)
    });
    let added = added.expect("the add event");
    assert_eq!(added["object"]["gateway"], "10.77.1.1");
    assert_eq!(added["object"]["dev"], "host0");
    for line in &w.seen {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[test]
fn a_closed_pipe_ends_it_cleanly() {
    let _l = lock();
    let bed = testbed();
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        &format!(
            "{} watch qbittorrent | head -n 1 >/dev/null; echo \"rc=${{PIPESTATUS[0]}}\"",
            common::machnet_bin()
        ),
    ]);
    let mut l = Lines::start(cmd);
    let mut n = 0;
    let done = loop {
        ip(
            &bed,
            "qbittorrent",
            &[
                "route",
                "add",
                "blackhole",
                &format!("198.51.100.{}", 50 + n),
            ],
        );
        ip(
            &bed,
            "qbittorrent",
            &[
                "route",
                "del",
                "blackhole",
                &format!("198.51.100.{}", 50 + n),
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(line) = l.rx.try_recv() {
            l.seen.push(line);
        }
        if l.seen.iter().any(|s| s.starts_with("rc=")) || n == 50 {
            break l.seen.clone();
        }
        n += 1;
    };
    assert!(
        done.contains(&"rc=0".to_string()),
        "machnet's exit after the pipe closed: {done:?}"
    );
}

#[test]
fn reapply_puts_declared_routes_back_and_reports_a_fight() {
    let _l = lock();
    let bed = testbed();
    let dir = std::env::temp_dir().join(format!("machnet-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = dir.join("set.toml");
    std::fs::write(
        &set,
        "[machines.qbittorrent]\nroutes = [ { destination = \"192.0.2.77/32\", type = \"blackhole\" } ]\n",
    )
    .unwrap();
    let set = set.to_str().unwrap().to_string();
    ok(machnet(&["apply", &set]), "apply");
    let mut w = watch(&["--reapply", &set, "qbittorrent"]);
    handshake(&bed, "qbittorrent", &mut [&mut w], 6);

    let present = || {
        let out = ok(
            bed.ip("qbittorrent", &["route", "show", "192.0.2.77"]),
            "ip",
        );
        !out.is_empty()
    };
    // Deleted by hand: put back, and said so.
    for round in 1..=3 {
        ip(
            &bed,
            "qbittorrent",
            &["route", "del", "blackhole", "192.0.2.77"],
        );
        let seen = w.until(&format!("reapply {round}"), |l| {
            l.starts_with("qbittorrent: reapplied: 1 added")
        });
        w.seen[seen] = String::from("(counted)");
        assert!(present(), "round {round}: the route is back");
    }
    // A fourth deletion within the minute: machnet stops fighting and says why.
    ip(
        &bed,
        "qbittorrent",
        &["route", "del", "blackhole", "192.0.2.77"],
    );
    w.until("the fight report", |l| {
        l.starts_with("qbittorrent: declared routes were removed again after 3 re-applies")
    });
    assert!(!present(), "not put back while paused");
    drop(w);
    let none = dir.join("none.toml");
    std::fs::write(&none, "[machines.qbittorrent]\nroutes = []\n").unwrap();
    ok(machnet(&["apply", none.to_str().unwrap()]), "clean up");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Routes a test added with its own protocol number, flushed again when dropped.
struct FlushProto<'a>(&'a Testbed, &'a str, &'a str);

impl Drop for FlushProto<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .ip(self.1, &["route", "flush", "table", "all", "proto", self.2]);
    }
}

/// A burst the kernel cannot queue (a 4 KiB receive buffer, the watcher stopped while 600
/// routes go in): machnet says changes were lost, prints the machine's whole state as it
/// is now, and goes on with the changes that follow.
#[test]
fn an_overrun_is_reported_and_followed_by_the_whole_current_state() {
    let _l = lock();
    let bed = testbed();
    let mut ours = watch(&["empty", "--rcvbuf", "4096"]);
    handshake(&bed, "empty", &mut [&mut ours], 7);
    let _flush = FlushProto(&bed, "empty", "250");
    ours.signal(libc::SIGSTOP);
    let batch: String = (0..600)
        .map(|i| {
            format!(
                "route add blackhole 10.201.{}.{}/32 proto 250\n",
                i / 250,
                i % 250
            )
        })
        .collect();
    let mut ip_batch = Command::new("nsenter");
    ip_batch
        .args([
            "-t",
            &bed.leader("empty").to_string(),
            "-n",
            "ip",
            "-batch",
            "-",
        ])
        .stdin(Stdio::piped());
    let mut child = ip_batch.spawn().expect("ip -batch");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch");
    ours.signal(libc::SIGCONT);

    let lost = ours.until("the overrun note", |l| {
        l.starts_with("empty: changes were lost")
    });
    let start = ours.until("the resync note", |l| l.starts_with("empty: resync: "));
    let end = ours.until("the end of the resync", |l| {
        l.starts_with("empty: resynced")
    });
    assert!(lost < start && start < end);
    let state: Vec<&str> = ours.seen[start + 1..end]
        .iter()
        .map(|l| l.strip_prefix("empty: ").unwrap_or_else(|| panic!("{l}")))
        .collect();
    // Every route the machine has now is in the state printed, as ip prints it.
    let mut routes = 0;
    for family in ["-4", "-6"] {
        let table = ok(
            bed.ip("empty", &[family, "route", "show", "table", "all"]),
            "ip route",
        );
        for line in table.lines() {
            assert!(
                state.contains(&line),
                "{line:?} missing from the resync:\n{state:#?}"
            );
            routes += 1;
        }
    }
    assert!(routes >= 600, "{routes}");
    let note = &ours.seen[start];
    assert!(
        note.ends_with(&format!(" addresses, {routes} routes")),
        "{note}"
    );
    // And the watch goes on.
    ip(
        &bed,
        "empty",
        &["route", "add", "blackhole", "10.202.0.1", "proto", "250"],
    );
    ours.until("a change after the resync", |l| {
        l == "empty: blackhole 10.202.0.1 proto 250 "
    });
}
