//! One machine that cannot be read never fails a command over many machines: every other
//! machine is printed, the unreadable ones say why, and the exit code is 13 (partial).
//!
//! The denial is real: machnet runs as root of a user namespace of its own
//! (tests/testbed/userns-machine), where opening the /proc/PID/ns/net of every process
//! outside it, PID 1's included, is refused with EACCES, while the one machine whose
//! leader lives in that user namespace can be entered.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const PARTIAL: i32 = 13;

/// The user-namespaced machine, unregistered and ended when dropped.
struct UsernsMachine(MachineLeader);

impl UsernsMachine {
    /// Each test makes its own (tests run in parallel; a name is registered once).
    fn start(name: &str) -> UsernsMachine {
        let script = format!(
            "{}/tests/testbed/userns-machine",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut make = Command::new(script);
        make.arg(name);
        let pid: i32 = ok(run(make), "userns-machine")
            .trim()
            .parse()
            .expect("leader PID");
        UsernsMachine(MachineLeader {
            pid,
            machine: Some(name.into()),
        })
    }

    /// machnet ARGS as root of the machine's user namespace.
    fn machnet(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.0.pid.to_string(), "-U", "--", machnet_bin()])
            .args(args);
        run(cmd)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.0.pid.to_string(), "-U", "-n", "ip"])
            .args(args);
        ok(run(cmd), "ip in the userns machine")
    }
}

fn partial(out: &Output, what: &str) -> (String, String) {
    assert_eq!(
        out.status.code(),
        Some(PARTIAL),
        "{what}: stderr {}",
        stderr(out)
    );
    (stdout(out), stderr(out))
}

#[test]
fn list_shows_every_machine_and_why_some_could_not_be_read() {
    const MACHINE: &str = "usernsl";
    let bed = testbed();
    let m = UsernsMachine::start(MACHINE);
    let (table, _) = partial(&m.machnet(&["list"]), "list");
    let row_and_next = |name: &str| {
        let mut lines = table
            .lines()
            .skip_while(|l| !l.starts_with(&format!("{name} ")));
        let row = lines
            .next()
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        (row.to_string(), lines.next().unwrap_or("").to_string())
    };
    let (host, why) = row_and_next(".host");
    assert!(host.ends_with("error"), "{table}");
    assert!(
        why.contains("opening /proc/1/ns/net: Permission denied"),
        "{table}"
    );
    for name in bed.machines.keys().filter(|n| *n != "stale") {
        let (row, why) = row_and_next(name);
        assert!(row.ends_with("error"), "{name}: {table}");
        assert!(why.contains("Permission denied"), "{name}: {table}");
    }
    let (row, next) = row_and_next(MACHINE);
    assert!(row.ends_with("private"), "{table}");
    assert!(next.contains("10.123.0.1/24"), "{table}");

    let (json, _) = partial(&m.machnet(&["list", "--json"]), "list --json");
    let rows: Value = serde_json::from_str(&json).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["machine"] == name)
            .unwrap_or_else(|| panic!("{name} in {rows}"))
            .clone()
    };
    assert_eq!(row(MACHINE)["state"], "running");
    assert_eq!(row("corpus")["state"], "error");
    assert!(row("corpus")["error"]
        .as_str()
        .unwrap()
        .contains("Permission denied"));
}

#[test]
fn routes_all_audit_whois_and_topology_print_the_rest() {
    const MACHINE: &str = "usernsr";
    let _bed = testbed();
    let m = UsernsMachine::start(MACHINE);

    let (routes, notes) = partial(&m.machnet(&["routes", "--all"]), "routes --all");
    let theirs: String = m
        .ip(&["route", "show"])
        .lines()
        .map(|l| format!("{MACHINE}: {l}\n"))
        .collect();
    let mine: String = routes
        .lines()
        .filter(|l| l.starts_with(&format!("{MACHINE}: ")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(mine, theirs);
    assert!(!theirs.is_empty());
    assert!(
        notes.contains("corpus skipped: machine corpus: opening"),
        "{notes}"
    );

    let (audit, _) = partial(&m.machnet(&["audit", "--json"]), "audit");
    let findings: Value = serde_json::from_str(&audit).unwrap();
    let unreadable: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "unreadable-machine")
        .map(|f| f["machine"].as_str().unwrap())
        .collect();
    assert!(unreadable.contains(&"corpus"), "{findings}");
    assert!(!unreadable.contains(&MACHINE), "{findings}");

    let (whois, notes) = partial(&m.machnet(&["whois", "10.123.0.1"]), "whois");
    assert!(whois.contains(MACHINE), "{whois}");
    assert!(
        notes.contains("not read: machine corpus: opening"),
        "{notes}"
    );

    let (topology, _) = partial(&m.machnet(&["topology", "--format", "json"]), "topology");
    let graph: Value = serde_json::from_str(&topology).unwrap();
    let node = |name: &str| {
        graph["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {graph}"))
            .clone()
    };
    assert_eq!(node(MACHINE)["kind"], "machine");
    assert_eq!(node("corpus")["kind"], "unreadable");
    assert!(node("corpus")["reason"]
        .as_str()
        .unwrap()
        .contains("Permission denied"));
}

#[test]
fn watch_names_the_machines_it_cannot_watch_and_watches_the_rest() {
    const MACHINE: &str = "usernsw";
    let _bed = testbed();
    let m = UsernsMachine::start(MACHINE);
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &m.0.pid.to_string(), "-U", "--", machnet_bin()])
        .args(["watch", MACHINE, "corpus"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("machnet watch");
    let watcher = MachineLeader {
        pid: child.id() as i32,
        machine: None,
    };
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |what: &str, pred: &dyn Fn(&str) -> bool, poke: &dyn Fn()| {
        for _ in 0..100 {
            poke();
            while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return;
                }
            }
        }
        panic!("never saw {what}: {seen:#?}");
    };
    wait_for(
        "corpus not watched",
        &|l| l.starts_with("corpus: not watched: ") && l.contains("Permission denied"),
        &|| {},
    );
    // Changes in the machine it could enter keep coming (the watch starts a moment after
    // the process does: poke until one shows).
    wait_for(
        "a change in the userns machine",
        &|l| l.starts_with(&format!("{MACHINE}: Deleted blackhole 10.124.0.1 ")),
        &|| {
            m.ip(&["route", "add", "blackhole", "10.124.0.1"]);
            m.ip(&["route", "del", "blackhole", "10.124.0.1"]);
        },
    );
    drop(watcher);
    let _ = child.wait();
}
