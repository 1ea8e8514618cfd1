//! Every bad input: one sentence on stderr, a meaningful exit code, nothing on stdout.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn unknown_machine_names_the_known_ones_and_the_nearest() {
    let _bed = testbed();
    let out = machnet(&["routes", "qbitorrent"]);
    let err = fails_cleanly(&out, 3, "unknown machine");
    for known in ["qbittorrent", "corpus", "hostshare", "stale"] {
        assert!(err.contains(known), "should name {known}: {err}");
    }
    assert!(err.contains("did you mean \"qbittorrent\""), "{err}");
}

#[test]
fn stale_machine_is_never_entered() {
    let bed = testbed();
    let out = machnet(&["routes", "stale"]);
    let err = fails_cleanly(&out, 6, "stale machine");
    assert!(err.contains("stale"), "{err}");
    let out = machnet(&["exec", "stale", "--", "true"]);
    fails_cleanly(&out, 6, "exec on a stale machine");
    let _ = bed;
}

/// The PID-reuse hazard for real: a machine whose dead leader's PID now belongs to an
/// unrelated process (tests/testbed/reused-pid-machine makes one). machnet must refuse
/// it, not enter the impostor's namespace.
#[test]
fn stale_machine_whose_pid_was_reused_is_refused() {
    let bed = testbed();
    let script = format!(
        "{}/tests/testbed/reused-pid-machine",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut make = Command::new(script);
    make.arg("reused");
    let made = ok(run(make), "reused-pid-machine");
    let pid: i32 = made.trim().parse().expect("the reused PID");
    let _impostor = common::MachineLeader {
        pid,
        machine: Some("reused".into()),
    };
    // The impostor is alive under the machine's registered Leader PID.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let err = fails_cleanly(
        &machnet(&["routes", "reused"]),
        6,
        "machine whose leader PID was reused",
    );
    // machined 262 knows the leader by its pidfd, and that check refuses first; older
    // machined only by its PID, and then the impostor's cgroup gives it away.
    let why = if bed.machined_knows_leader_pidfds() {
        "(pidfd id"
    } else {
        "outside the machine's unit"
    };
    assert!(
        err.contains(&format!("PID {pid} now belongs to another process")) && err.contains(why),
        "{err}"
    );
    fails_cleanly(
        &machnet(&["exec", "reused", "--", "true"]),
        6,
        "exec into a reused PID",
    );
    let _ = bed;
}

/// The same hazard where the cgroup check cannot tell: the process that took the dead
/// leader's PID sits in the machine's own scope. On machined without LeaderPIDFDId (252,
/// 257) only its start time, later than the registration, gives it away.
#[test]
fn a_reused_pid_inside_the_machines_own_scope_is_refused() {
    let bed = testbed();
    let script = format!(
        "{}/tests/testbed/reused-pid-machine",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut make = Command::new(script);
    make.args(["reusedin", "inside"]);
    let made = ok(run(make), "reused-pid-machine inside");
    let pid: i32 = made.trim().parse().expect("the reused PID");
    let _impostor = common::MachineLeader {
        pid,
        machine: Some("reusedin".into()),
    };
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup.contains("machine-reusedin.scope"), "{cgroup}");

    let err = fails_cleanly(
        &machnet(&["routes", "reusedin"]),
        6,
        "a reused PID inside the machine's scope",
    );
    assert!(
        err.contains(&format!("PID {pid} now belongs to another process")),
        "{err}"
    );
    fails_cleanly(
        &machnet(&["exec", "reusedin", "--", "true"]),
        6,
        "exec into a reused PID inside the scope",
    );
    // list and audit say what happened, not that the leader is gone.
    let list = ok(machnet(&["list"]), "list");
    let row = list
        .lines()
        .skip_while(|l| !l.starts_with("reusedin "))
        .nth(1)
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains(&format!("PID {pid} now belongs to another process")),
        "{list}"
    );
    let audit = machnet(&["audit", "reusedin", "--json"]);
    let findings: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("audit JSON");
    let stale = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "stale-machine")
        .unwrap_or_else(|| panic!("{findings}"));
    let message = stale["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("PID {pid} now belongs to another process")),
        "{message}"
    );
    assert!(!message.contains("is gone"), "{message}");
    let _ = bed;
}

#[test]
fn malformed_targets_and_tables_are_usage_errors() {
    for args in [
        &["routes", "a/b"][..],
        &["routes", "pid:nope"],
        &["routes", "netns:"],
        &["routes", "corpus", "--table", "nonsense"],
        &["routes"],
        &["routes", "corpus", "-4", "-6"],
        &["exec", "corpus"],
    ] {
        let err = fails_cleanly(&machnet(args), 2, &format!("{args:?}"));
        if args.get(1).is_some_and(|a| a.contains(['/', ':'])) {
            assert!(err.contains("malformed target"), "{args:?}: {err}");
        }
    }
}

/// A thread id is not a process: say so, as a missing target.
#[test]
fn a_thread_id_is_not_a_process() {
    let _bed = testbed();
    let tid = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|t| *t != std::process::id())
        .expect("the test harness runs tests on threads");
    let err = fails_cleanly(&machnet(&["routes", &format!("pid:{tid}")]), 3, "thread id");
    assert!(err.contains("is a thread, not a process"), "{err}");
}

#[test]
fn missing_netns_and_pid_are_not_found() {
    fails_cleanly(
        &machnet(&["routes", "netns:does-not-exist"]),
        3,
        "missing netns",
    );
    fails_cleanly(&machnet(&["routes", "pid:2147483000"]), 3, "missing pid");
}

#[test]
fn unreachable_bus_says_machined_is_unavailable() {
    let _bed = testbed();
    let mut cmd = Command::new(machnet_bin());
    cmd.args(["routes", "corpus"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus.sock");
    let err = fails_cleanly(&run(cmd), 4, "no bus");
    assert!(err.contains("systemd-machined"), "{err}");
}

/// A real bus with no machined on it (a second private dbus-daemon this test starts).
#[test]
fn bus_without_machined_says_machined_is_not_running() {
    let bed = testbed();
    let dir = bed.dir.join(format!("empty-bus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = std::fs::read_to_string(bed.dir.join("bus.conf")).expect("testbed bus.conf");
    let sock = dir.join("bus.sock");
    let conf = conf.replace(
        &conf[conf.find("<listen>").unwrap()..conf.find("</listen>").unwrap() + 9],
        &format!("<listen>unix:path={}</listen>", sock.display()),
    );
    std::fs::write(dir.join("bus.conf"), conf).unwrap();
    let daemon = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", dir.join("bus.conf").display()))
        .arg("--nofork")
        .stdout(Stdio::null())
        .spawn()
        .expect("dbus-daemon");
    let _guard = KillOnDrop(daemon);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut cmd = Command::new(machnet_bin());
    cmd.args(["list"]).env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", sock.display()),
    );
    let err = fails_cleanly(&run(cmd), 4, "bus without machined");
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn not_root_says_which_capability_is_missing() {
    let _bed = testbed();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(machnet_bin())
    .args(["routes", "corpus"]);
    let err = fails_cleanly(&run(cmd), 5, "not root");
    assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
}

#[test]
fn machine_sharing_the_host_netns_says_so() {
    let bed = testbed();
    let out = machnet(&["routes", "hostshare"]);
    let err = stderr(&out);
    let routes = ok(out, "machnet routes hostshare");
    assert!(err.contains("shares the host's network namespace"), "{err}");
    let mut ip = Command::new("ip");
    ip.args(["route", "show"]);
    let host = ok(run(ip), "ip route");
    assert_eq!(routes, host, "hostshare's routes are the host's");
    let _ = bed;
}
