//! `machnet apply` against the real testbed: the nspawn container `qbittorrent` and the
//! netns machine `empty`. Every check reads the tables back with `ip` itself.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{fails_cleanly, machnet, mask_expires, ok, run, stderr, stdout, testbed, Testbed};

/// The tests here share two machines' tables: one at a time.
static TABLES: Mutex<()> = Mutex::new(());

/// The machines under test, locked, and put back to no machnet routes (and no test
/// leftovers) when the test ends, pass or fail.
struct Bench {
    bed: Testbed,
    dir: std::path::PathBuf,
    _lock: MutexGuard<'static, ()>,
}

fn bench(name: &str) -> Bench {
    let lock = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let bed = testbed();
    bed.settle_ipv6("qbittorrent");
    let dir = std::env::temp_dir().join(format!("machnet-apply-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Bench {
        bed,
        dir,
        _lock: lock,
    }
}

impl Bench {
    /// Writes a route set file and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Every route of both families in every table, as `ip` prints them.
    fn tables(&self, machine: &str) -> String {
        let v4 = ok(
            self.bed
                .ip(machine, &["-4", "route", "show", "table", "all"]),
            "ip -4",
        );
        let v6 = ok(
            self.bed
                .ip(machine, &["-6", "route", "show", "table", "all"]),
            "ip -6",
        );
        mask_expires(&format!("{v4}{v6}"))
    }

    /// The routes carrying machnet's protocol (109), as `ip` prints them. (`ip route show
    /// proto 109` would leave the protocol out of each line.)
    fn ours(&self, machine: &str) -> String {
        self.tables(machine)
            .lines()
            .filter(|l| l.contains(" proto 109 "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn ip_ok(&self, machine: &str, args: &[&str]) {
        ok(self.bed.ip(machine, args), &format!("ip {args:?}"));
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let none = self.file(
            "none.json",
            r#"{"machines": {"qbittorrent": {"routes": []}, "empty": {"routes": []}}}"#,
        );
        let out = machnet(&["apply", &none]);
        // Foreign routes some tests add by hand.
        for prefix in ["10.70.0.0/16", "10.71.0.0/16"] {
            let _ = self.bed.ip("qbittorrent", &["route", "del", prefix]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            ok(out, "clean-up apply");
        }
    }
}

const SET: &str = r#"
[machines.qbittorrent]
routes = [
  { destination = "10.50.0.0/16", gateway = "10.77.1.1", dev = "host0", metric = 10 },
  { destination = "192.0.2.0/24", type = "blackhole" },
  { destination = "10.51.0.0/16", gateway = "10.77.1.1", table = 100, mtu = 1400, src = "10.77.1.2" },
  { destination = "10.52.0.0/16", gateway = "10.200.0.1", dev = "host0", onlink = true },
  { destination = "fd99::/64", gateway = "fd77:1::1" },
]

[machines.empty]
routes = [
  { destination = "198.51.100.0/24", type = "unreachable", table = 100 },
  { destination = "2001:db8:5::/48", type = "prohibit", metric = 5 },
]
"#;

/// What `ip` prints for SET's routes, machine by machine.
const QBITTORRENT_ROUTES: &str = "\
10.51.0.0/16 via 10.77.1.1 dev host0 table 100 proto 109 src 10.77.1.2 mtu 1400 
10.50.0.0/16 via 10.77.1.1 dev host0 proto 109 metric 10 
10.52.0.0/16 via 10.200.0.1 dev host0 proto 109 onlink 
blackhole 192.0.2.0/24 proto 109 
fd99::/64 via fd77:1::1 dev host0 proto 109 metric 1024 pref medium
";
const EMPTY_ROUTES: &str = "\
unreachable 198.51.100.0/24 table 100 proto 109 
prohibit 2001:db8:5::/48 dev lo proto 109 metric 5 pref medium
";

#[test]
fn apply_reaches_the_set_in_a_container_and_a_netns_machine_and_then_does_nothing() {
    let b = bench("reach");
    let set = b.file("set.toml", SET);
    let before_qb = b.tables("qbittorrent");

    let plan = ok(machnet(&["apply", &set, "--dry-run"]), "dry run");
    assert!(
        plan.contains("# qbittorrent: 5 to add, 0 to replace, 0 to delete; 0 in place")
            && plan.contains("+ 10.50.0.0/16 via 10.77.1.1 dev host0 proto 109 metric 10\n")
            && plan.contains("+ prohibit 2001:db8:5::/48 proto 109 metric 5\n"),
        "{plan}"
    );
    assert_eq!(
        b.tables("qbittorrent"),
        before_qb,
        "--dry-run changed nothing"
    );

    let applied = ok(machnet(&["apply", &set]), "apply");
    assert_eq!(
        applied,
        "empty: 2 added, 0 replaced, 0 deleted; 0 already in place\n\
         qbittorrent: 5 added, 0 replaced, 0 deleted; 0 already in place\n"
    );
    assert_eq!(b.ours("qbittorrent"), QBITTORRENT_ROUTES);
    assert_eq!(b.ours("empty"), EMPTY_ROUTES);

    // Idempotent: the second apply says so and touches nothing.
    let tables = (b.tables("qbittorrent"), b.tables("empty"));
    let again = ok(machnet(&["apply", &set]), "second apply");
    assert_eq!(
        again,
        "empty: in sync, nothing changed (2 declared routes in place)\n\
         qbittorrent: in sync, nothing changed (5 declared routes in place)\n"
    );
    assert_eq!((b.tables("qbittorrent"), b.tables("empty")), tables);
    let check = machnet(&["apply", &set, "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));

    // --machine narrows the run to the machines named.
    let only = ok(machnet(&["apply", &set, "--machine", "empty"]), "--machine");
    assert!(!only.contains("qbittorrent"), "{only}");
}

#[test]
fn json_and_toml_sets_are_the_same_set() {
    let b = bench("json");
    let json = b.file(
        "set.json",
        r#"{"machines": {"empty": {"routes": [
            {"destination": "198.51.100.0/24", "type": "unreachable", "table": 100,
             "gateway": null, "dev": null, "metric": null, "src": null, "mtu": null,
             "onlink": null, "proto": null},
            {"destination": "2001:db8:5::/48", "type": "prohibit", "metric": 5}]}}}"#,
    );
    ok(machnet(&["apply", &json]), "apply json");
    assert_eq!(b.ours("empty"), EMPTY_ROUTES);
    let toml = b.file("set.toml", SET);
    let same = ok(
        machnet(&["apply", &toml, "--machine", "empty", "--check"]),
        "TOML check after JSON apply",
    );
    assert!(same.contains("# empty: in sync"), "{same}");

    // On stdin (`-`), JSON is told from TOML by its leading brace, whitespace before it
    // or not.
    let json_text = std::fs::read(&json).unwrap();
    let mut indented = b"\n   ".to_vec();
    indented.extend_from_slice(&json_text);
    for (what, input) in [("JSON", indented), ("TOML", SET.as_bytes().to_vec())] {
        let out =
            common::machnet_with_stdin(&["apply", "-", "--machine", "empty", "--check"], &input);
        let said = ok(out, &format!("{what} on stdin"));
        assert!(said.contains("# empty: in sync"), "{what}: {said}");
    }
}

#[test]
fn drift_is_reported_by_check_and_repaired_by_apply() {
    let b = bench("drift");
    let set = b.file("set.toml", SET);
    ok(machnet(&["apply", &set]), "apply");

    // By hand: one declared route gone, one changed, one of ours added that nobody declared.
    b.ip_ok("qbittorrent", &["route", "del", "192.0.2.0/24"]);
    b.ip_ok(
        "qbittorrent",
        &[
            "route",
            "replace",
            "10.50.0.0/16",
            "via",
            "10.77.1.3",
            "dev",
            "host0",
            "metric",
            "10",
            "proto",
            "109",
        ],
    );
    b.ip_ok(
        "qbittorrent",
        &[
            "route",
            "add",
            "10.60.0.0/16",
            "via",
            "10.77.1.1",
            "proto",
            "109",
        ],
    );

    let check = machnet(&["apply", &set, "--check"]);
    assert_eq!(check.status.code(), Some(9), "{}", stderr(&check));
    let plan = stdout(&check);
    assert!(
        plan.contains("# qbittorrent: 1 to add, 1 to replace, 1 to delete; 3 in place\n")
            && plan.contains("+ blackhole 192.0.2.0/24 proto 109\n")
            && plan.contains(
                "~ 10.50.0.0/16 via 10.77.1.1 dev host0 proto 109 metric 10\n\
                 #   was: 10.50.0.0/16 via 10.77.1.3 dev host0 proto 109 metric 10\n"
            )
            && plan.contains("- 10.60.0.0/16 via 10.77.1.1 dev host0 proto 109\n")
            && plan.contains("# empty: in sync"),
        "{plan}"
    );

    let fixed = ok(machnet(&["apply", &set]), "repair");
    assert!(
        fixed.contains("qbittorrent: 1 added, 1 replaced, 1 deleted; 3 already in place"),
        "{fixed}"
    );
    assert_eq!(b.ours("qbittorrent"), QBITTORRENT_ROUTES);
    let check = machnet(&["apply", &set, "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
}

#[test]
fn foreign_routes_survive_and_collide_only_when_adopted() {
    let b = bench("foreign");
    b.ip_ok(
        "qbittorrent",
        &[
            "route",
            "add",
            "10.70.0.0/16",
            "via",
            "10.77.1.1",
            "proto",
            "static",
        ],
    );
    let tables = b.tables("qbittorrent");

    // Same key (prefix, table, metric 0): refused, naming both, nothing changed.
    let same_key = b.file(
        "same.toml",
        r#"[machines.qbittorrent]
routes = [
  { destination = "10.71.0.0/16", gateway = "10.77.1.1" },
  { destination = "10.70.0.0/16", gateway = "10.77.1.3" },
]"#,
    );
    let err = fails_cleanly(
        &machnet(&["apply", &same_key]),
        10,
        "declared route on a foreign key",
    );
    assert!(
        err.contains("declared route 2 (10.70.0.0/16 via 10.77.1.3 proto 109)")
            && err.contains("(10.70.0.0/16 via 10.77.1.1 dev host0 proto static)")
            && err.contains("--adopt"),
        "{err}"
    );
    assert_eq!(
        b.tables("qbittorrent"),
        tables,
        "a conflict changes nothing"
    );

    // Another metric is another key: both routes live side by side.
    let beside = b.file(
        "beside.toml",
        r#"[machines.qbittorrent]
routes = [ { destination = "10.70.0.0/16", gateway = "10.77.1.3", metric = 50 } ]"#,
    );
    ok(machnet(&["apply", &beside]), "apply beside a foreign route");
    let routes = ok(
        b.bed.ip("qbittorrent", &["route", "show", "10.70.0.0/16"]),
        "ip",
    );
    assert_eq!(
        routes,
        "10.70.0.0/16 via 10.77.1.1 dev host0 proto static \n\
         10.70.0.0/16 via 10.77.1.3 dev host0 proto 109 metric 50 \n"
    );
    // Undeclaring everything deletes ours and leaves the foreign one.
    let nothing = b.file("nothing.toml", "[machines.qbittorrent]\nroutes = []\n");
    ok(machnet(&["apply", &nothing]), "apply an empty set");
    assert_eq!(b.tables("qbittorrent"), tables);

    // --adopt takes the foreign route over.
    let adopted = ok(machnet(&["apply", &same_key, "--adopt"]), "adopt");
    assert!(adopted.contains("1 added, 1 replaced"), "{adopted}");
    let routes = ok(
        b.bed.ip("qbittorrent", &["route", "show", "10.70.0.0/16"]),
        "ip",
    );
    assert_eq!(routes, "10.70.0.0/16 via 10.77.1.3 dev host0 proto 109 \n");
}

#[test]
fn a_refusal_mid_apply_puts_the_table_back_exactly() {
    let b = bench("rollback");
    // Start from a state with one route of ours to replace and one to delete, so the
    // failed apply has done all three kinds of step before it is undone.
    let start = b.file(
        "start.toml",
        r#"[machines.qbittorrent]
routes = [
  { destination = "10.50.0.0/16", gateway = "10.77.1.3", dev = "host0", metric = 10 },
  { destination = "10.61.0.0/16", gateway = "10.77.1.1", mtu = 1300 },
  { destination = "fd98::/64", gateway = "fd77:1::1" },
]"#,
    );
    ok(machnet(&["apply", &start]), "starting set");
    let tables = b.tables("qbittorrent");

    // Valid routes first, then one through a gateway on no connected subnet.
    let failing = b.file(
        "failing.toml",
        r#"[machines.qbittorrent]
routes = [
  { destination = "10.50.0.0/16", gateway = "10.77.1.1", dev = "host0", metric = 10 },
  { destination = "192.0.2.0/24", type = "blackhole" },
  { destination = "fd99::/64", gateway = "fd77:1::1" },
  { destination = "10.66.0.0/16", gateway = "10.200.0.1", dev = "host0" },
  { destination = "10.67.0.0/16", gateway = "10.77.1.1" },
]"#,
    );
    let err = fails_cleanly(
        &machnet(&["apply", &failing]),
        7,
        "kernel refusal mid-apply",
    );
    assert!(
        err.contains("adding declared route 4 (10.66.0.0/16 via 10.200.0.1 dev host0 proto 109)")
            && err.contains("the kernel said:")
            && err.contains("was put back"),
        "{err}"
    );
    assert_eq!(
        b.tables("qbittorrent"),
        tables,
        "the table is exactly as it was"
    );

    // A device that does not exist is found before anything is sent.
    let no_device = b.file(
        "nodev.toml",
        r#"[machines.qbittorrent]
routes = [
  { destination = "192.0.2.0/24", type = "blackhole" },
  { destination = "10.68.0.0/16", dev = "nosuch0" },
]"#,
    );
    let err = fails_cleanly(&machnet(&["apply", &no_device]), 3, "missing device");
    assert!(
        err.contains("no device nosuch0") && err.contains("host0"),
        "{err}"
    );
    assert_eq!(b.tables("qbittorrent"), tables);
}

/// IPv4 keeps several routes at one key, in order. A failed apply that replaced the first
/// and deleted the others must put them back in that order, not reversed.
#[test]
fn routes_sharing_a_key_go_back_in_their_order() {
    let b = bench("same-key-order");
    let show = || {
        ok(
            b.bed.ip("qbittorrent", &["route", "show", "10.71.0.0/16"]),
            "ip",
        )
    };
    b.ip_ok(
        "qbittorrent",
        &[
            "route",
            "add",
            "10.71.0.0/16",
            "via",
            "10.77.1.1",
            "proto",
            "109",
        ],
    );
    for gateway in ["10.77.1.3", "10.77.1.4"] {
        b.ip_ok(
            "qbittorrent",
            &[
                "route",
                "append",
                "10.71.0.0/16",
                "via",
                gateway,
                "proto",
                "109",
            ],
        );
    }
    let tables = b.tables("qbittorrent");
    let before = show();
    assert_eq!(before.lines().count(), 3, "{before}");

    // One datagram: replace the first, an add the kernel refuses, delete the other two.
    let failing = b.file(
        "same-key.toml",
        r#"[machines.qbittorrent]
routes = [
  { destination = "10.71.0.0/16", gateway = "10.77.1.5" },
  { destination = "10.66.0.0/16", gateway = "10.200.0.1", dev = "host0" },
]"#,
    );
    let err = fails_cleanly(&machnet(&["apply", &failing]), 7, "refusal");
    assert!(err.contains("was put back (3 steps undone)"), "{err}");
    assert_eq!(show(), before);
    assert_eq!(b.tables("qbittorrent"), tables);
    // Bench's drop deletes them (they are of machnet's protocol), pass or fail.
}

/// Only the last request of each datagram asks for an ack (the kernel answers refusals
/// anyway): a refusal in a later datagram, or as the very last request, must still be
/// found, named, and everything done before it undone.
#[test]
fn a_refusal_in_a_later_datagram_or_last_of_all_is_undone_too() {
    let b = bench("late-refusal");
    let tables = b.tables("qbittorrent");
    // 5,000 blackhole routes are about 180 KiB of requests: three 64 KiB datagrams.
    let routes = |bad_at: usize| -> String {
        let mut text = String::from("{\"machines\": {\"qbittorrent\": {\"routes\": [");
        for i in 0..5000 {
            if i > 0 {
                text.push(',');
            }
            if i == bad_at {
                text.push_str(
                    r#"{"destination": "10.66.0.0/16", "gateway": "10.200.0.1", "dev": "host0"}"#,
                );
            } else {
                text.push_str(&format!(
                    r#"{{"destination": "10.{}.{}.0/24", "type": "blackhole"}}"#,
                    100 + i / 256,
                    i % 256
                ));
            }
        }
        text.push_str("]}}}");
        text
    };
    for bad_at in [3500, 4999] {
        let file = b.file(&format!("late-{bad_at}.json"), &routes(bad_at));
        let err = fails_cleanly(
            &machnet(&["apply", &file]),
            7,
            "refusal in a later datagram",
        );
        // Everything before the refused route was done, and the rest of its datagram
        // after it; later datagrams are never sent.
        let undone: usize = err
            .split("was put back (")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of steps undone: {err}"));
        assert!(
            err.contains(&format!(
                "adding declared route {} (10.66.0.0/16 via 10.200.0.1",
                bad_at + 1
            )) && undone >= bad_at
                && undone <= 4999,
            "{err}"
        );
        assert_eq!(
            b.tables("qbittorrent"),
            tables,
            "refused at {bad_at}: the table is as it was"
        );
    }
}

#[test]
fn two_applies_at_once_leave_one_set_or_the_other() {
    let b = bench("race");
    let set_a = b.file(
        "a.toml",
        &format!(
            "[machines.empty]\nroutes = [\n{}]\n",
            (0..200)
                .map(|i| format!(
                    "  {{ destination = \"10.{}.{}.0/24\", type = \"blackhole\" }},\n",
                    100 + i / 100,
                    i % 100
                ))
                .collect::<String>()
        ),
    );
    let set_b = b.file(
        "b.toml",
        &format!(
            "[machines.empty]\nroutes = [\n{}]\n",
            (0..200)
                .map(|i| format!(
                    "  {{ destination = \"10.{}.{}.0/24\", type = \"unreachable\" }},\n",
                    100 + i / 100,
                    i % 100
                ))
                .collect::<String>()
        ),
    );
    let expect = |kind: &str| -> String {
        (0..200)
            .map(|i| format!("{kind} 10.{}.{}.0/24 proto 109 \n", 100 + i / 100, i % 100))
            .collect()
    };
    let (only_a, only_b) = (expect("blackhole"), expect("unreachable"));
    for round in 0..8 {
        let spawn = |file: &str| {
            Command::new(common::machnet_bin())
                .args(["apply", file])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (first, second) = if round % 2 == 0 {
            (spawn(&set_a), spawn(&set_b))
        } else {
            (spawn(&set_b), spawn(&set_a))
        };
        for child in [first, second] {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        let ours = b.ours("empty");
        let mut sorted: Vec<&str> = ours.lines().collect();
        sorted.sort_by_key(|l| {
            let prefix = l.split_whitespace().nth(1).unwrap();
            prefix
                .trim_end_matches(".0/24")
                .split('.')
                .map(|p| p.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        });
        let sorted: String = sorted.iter().map(|l| format!("{l}\n")).collect();
        assert!(
            sorted == only_a || sorted == only_b,
            "round {round}: the table mixes the two sets:\n{ours}"
        );
    }
}

#[test]
fn wait_bounds_the_wait_for_a_machine_and_its_devices() {
    let b = bench("wait");
    let bed = &b.bed;

    // A machine that never comes: the error says how long machnet waited.
    let never = b.file(
        "never.toml",
        "[machines.nosuchmachine]\nroutes = [ { destination = \"192.0.2.0/24\", type = \"blackhole\" } ]\n",
    );
    let err = fails_cleanly(
        &machnet(&["apply", &never, "--wait", "0.3"]),
        3,
        "a machine that never appears",
    );
    assert!(
        err.contains("nosuchmachine") && err.contains("after waiting 0.3s"),
        "{err}"
    );

    // A device that appears while machnet waits.
    let dev_set = b.file(
        "dev.toml",
        "[machines.empty]\nroutes = [ { destination = \"10.90.0.0/16\", dev = \"late0\" } ]\n",
    );
    let waiting = Command::new(common::machnet_bin())
        .args(["apply", &dev_set, "--wait", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(
        bed.ip(
            "empty",
            &[
                "link", "add", "late0", "type", "veth", "peer", "name", "late1",
            ],
        ),
        "adding late0",
    );
    ok(bed.ip("empty", &["link", "set", "late0", "up"]), "late0 up");
    let out = waiting.wait_with_output().unwrap();
    let _ = bed.ip("empty", &["link", "del", "late0"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A machine registered while machnet waits for it.
    let late_set = b.file(
        "late.toml",
        "[machines.late]\nroutes = [ { destination = \"192.0.2.0/24\", type = \"blackhole\" } ]\n",
    );
    let waiting = Command::new(common::machnet_bin())
        .args(["apply", &late_set, "--wait", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let script = format!("{}/tests/testbed/late-machine", env!("CARGO_MANIFEST_DIR"));
    let mut register = Command::new(script);
    register.arg("late");
    let leader: i32 = ok(run(register), "late-machine").trim().parse().unwrap();
    let _leader = common::MachineLeader {
        pid: leader,
        machine: Some("late".into()),
    };
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut ip = Command::new("nsenter");
    ip.args([
        "-t",
        &leader.to_string(),
        "-n",
        "ip",
        "route",
        "show",
        "proto",
        "109",
    ]);
    assert_eq!(ok(run(ip), "ip in late"), "blackhole 192.0.2.0/24 \n");
}

#[test]
fn bad_sets_and_targets_fail_cleanly_and_change_nothing() {
    let b = bench("bad");
    let tables = b.tables("qbittorrent");
    let cases: &[(&str, &str, i32, &str)] = &[
        (
            "typo.toml",
            "[machines.qbittorrent]\nroutes = [ { destination = \"10.1.0.0/16\", gatway = \"10.77.1.1\" } ]\n",
            2,
            "gatway",
        ),
        (
            "badroute.toml",
            "[machines.qbittorrent]\nroutes = [ { destination = \"192.0.2.0/24\", type = \"blackhole\" },\n { destination = \"10.1.0.0/33\" } ]\n",
            2,
            "route 2",
        ),
        (
            "badtype.json",
            r#"{"machines": {"qbittorrent": {"routes": [{"destination": "10.1.0.0/16", "type": "via"}]}}}"#,
            2,
            "not a route type",
        ),
        // JSON is read as a stream, yet a fault late in the file still stops everything
        // before the machines that came earlier are touched.
        (
            "late-bad.json",
            r#"{"machines": {"qbittorrent": {"routes": [{"destination": "192.0.2.0/24", "type": "blackhole"}]},
                "empty": {"routes": [{"destination": "10.1.0.0/33"}]}}}"#,
            2,
            "machine empty, route 1",
        ),
        (
            "truncated.json",
            r#"{"machines": {"qbittorrent": {"routes": [{"destination": "192.0.2.0/24", "type": "blackhole"}"#,
            2,
            "malformed route set",
        ),
        (
            "twice.json",
            r#"{"machines": {"qbittorrent": {"routes": [{"destination": "192.0.2.0/24", "type": "blackhole"}]},
                "qbittorrent": {"routes": []}}}"#,
            2,
            "\"qbittorrent\" is declared twice",
        ),
        (
            "nomachine.toml",
            "[machines.nosuchmachine]\nroutes = [ { destination = \"192.0.2.0/24\", type = \"blackhole\" } ]\n",
            3,
            "qbittorrent",
        ),
        (
            "host.toml",
            "[machines.hostshare]\nroutes = [ { destination = \"192.0.2.0/24\", type = \"blackhole\" } ]\n",
            2,
            "--allow-host",
        ),
    ];
    for (name, text, code, says) in cases {
        let file = b.file(name, text);
        let out: Output = machnet(&["apply", &file]);
        let err = fails_cleanly(&out, *code, name);
        assert!(err.contains(says), "{name}: {err}");
    }
    let err = fails_cleanly(
        &machnet(&["apply", &b.file("ok.toml", SET), "--machine", "nope"]),
        2,
        "--machine not in the file",
    );
    assert!(err.contains("empty, qbittorrent"), "{err}");
    assert_eq!(b.tables("qbittorrent"), tables);
}

#[test]
fn progress_shows_on_a_terminal_and_never_in_a_pipe() {
    let b = bench("progress");
    let routes: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"destination\": \"10.{}.{}.0/24\", \"type\": \"blackhole\"}},",
                150 + i / 256,
                i % 256
            )
        })
        .collect();
    let set = b.file(
        "big.json",
        &format!(
            "{{\"machines\": {{\"empty\": {{\"routes\": [{}]}}}}}}",
            routes.trim_end_matches(',')
        ),
    );
    let none = b.file("none.json", r#"{"machines": {"empty": {"routes": []}}}"#);

    // In a pipe: the summary on stdout, nothing at all on stderr.
    let piped = machnet(&["apply", &set]);
    assert_eq!(
        ok(piped.clone(), "apply in a pipe"),
        "empty: 3000 added, 0 replaced, 0 deleted; 0 already in place\n"
    );
    assert!(piped.stderr.is_empty(), "{}", stderr(&piped));
    ok(machnet(&["apply", &none]), "emptying");

    // On a terminal (script(1) gives machnet a pty): a progress count, erased at the end.
    let mut on_tty = Command::new("script");
    on_tty.args([
        "-qec",
        &format!("{} apply {set}", common::machnet_bin()),
        "/dev/null",
    ]);
    let shown = ok(run(on_tty), "apply on a terminal");
    assert!(
        shown.contains("\rempty: ") && shown.contains("/3000 routes") && shown.contains("\r\x1b[K"),
        "{shown:?}"
    );
}
