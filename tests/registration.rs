//! Machines registered by PID (RegisterMachine, what every machined takes) and with a pidfd
//! (RegisterMachineEx, as nspawn 262 registers) read alike: machnet finds, pins and enters
//! both, and refuses both once their leader is dead.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Command;

use common::*;

fn busctl(args: &[&str]) -> String {
    let mut cmd = Command::new("busctl");
    cmd.args(["--system", "--timeout=5"]).args(args);
    ok(run(cmd), "busctl")
}

fn machined_has_register_machine_ex() -> bool {
    busctl(&[
        "introspect",
        "--xml-interface",
        "org.freedesktop.machine1",
        "/org/freedesktop/machine1",
    ])
    .contains("<method name=\"RegisterMachineEx\">")
}

/// machined's LeaderPIDFDId for a machine (262 publishes it).
fn leader_pidfd_id(machine: &str) -> u64 {
    let path = busctl(&[
        "--json=short",
        "call",
        "org.freedesktop.machine1",
        "/org/freedesktop/machine1",
        "org.freedesktop.machine1.Manager",
        "GetMachine",
        "s",
        machine,
    ]);
    let path: serde_json::Value = serde_json::from_str(&path).unwrap();
    let id = busctl(&[
        "--json=short",
        "get-property",
        "org.freedesktop.machine1",
        path["data"][0].as_str().unwrap(),
        "org.freedesktop.machine1.Machine",
        "LeaderPIDFDId",
    ]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    id["data"]
        .as_u64()
        .unwrap_or_else(|| panic!("LeaderPIDFDId: {id}"))
}

/// The inode of a pidfd of PID: the id machined publishes for the process it registered.
fn pidfd_inode(pid: u32) -> u64 {
    // SAFETY: pidfd_open(2) returns a new descriptor or -1; the OwnedFd closes it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let file = std::fs::File::from(fd);
    std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap())
}

fn registered_by(bed: &Testbed, machine: &str) -> String {
    let tsv = std::fs::read_to_string(bed.dir.join("machines.tsv")).unwrap();
    tsv.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f[0] == machine)
        .and_then(|f| f.get(3).map(|s| s.to_string()))
        .unwrap_or_else(|| panic!("machines.tsv has no registered_by for {machine}:\n{tsv}"))
}

#[test]
fn machines_registered_by_pid_and_by_pidfd_read_alike() {
    let bed = testbed();
    let version = bed.systemd_version();
    let has_ex = machined_has_register_machine_ex();
    if version >= 262 {
        assert!(has_ex, "machined {version} should offer RegisterMachineEx");
    }
    let mut ways = vec!["pid"];
    if has_ex {
        ways.push("pidfd");
        // The testbed registers corpus and empty the new way wherever it can.
        for machine in ["corpus", "empty"] {
            assert_eq!(registered_by(&bed, machine), "pidfd", "{machine}");
            assert_eq!(
                leader_pidfd_id(machine),
                pidfd_inode(bed.leader(machine)),
                "{machine}'s LeaderPIDFDId"
            );
        }
    } else {
        report(&format!(
            "registration: machined {version} has no RegisterMachineEx: only registration \
             by PID was tried"
        ));
    }

    for way in ways {
        let name = format!("reg-{way}");
        let script = format!("{}/tests/testbed/late-machine", env!("CARGO_MANIFEST_DIR"));
        let mut register = Command::new(script);
        register.args([&name, way]);
        let leader: u32 = ok(run(register), "late-machine").trim().parse().unwrap();
        let _leader = MachineLeader {
            pid: leader as i32,
            machine: Some(name.clone()),
        };
        if version >= 262 {
            // Either way, machined 262 pins the process it was given.
            assert_eq!(leader_pidfd_id(&name), pidfd_inode(leader), "{name}");
        }

        // Something to read: a route of each family in the leader's namespace.
        let nsenter = |args: &[&str]| {
            let mut cmd = Command::new("nsenter");
            cmd.args(["-t", &leader.to_string(), "-n", "ip"]).args(args);
            ok(run(cmd), "nsenter ip")
        };
        nsenter(&[
            "route",
            "add",
            "blackhole",
            "10.55.0.0/16",
            "proto",
            "static",
        ]);
        nsenter(&[
            "-6",
            "route",
            "add",
            "unreachable",
            "fd55::/64",
            "metric",
            "7",
        ]);
        for family in ["-4", "-6"] {
            let ours = ok(machnet(&["routes", &name, family]), "machnet routes");
            let ip = nsenter(&[family, "route", "show"]);
            assert_eq!(ours, ip, "machnet routes {name} {family} vs ip route");
            assert!(!ip.is_empty(), "{family}: nothing was compared");
        }

        let list = ok(machnet(&["list", "--json"]), "list --json");
        let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["machine"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in {list}"));
        assert_eq!(row["leader"], leader, "{row}");
        assert_eq!(row["state"], "running", "{row}");
        let inode = std::fs::metadata(format!("/proc/{leader}/ns/net")).unwrap();
        assert_eq!(
            row["netns_inode"].as_u64(),
            Some(std::os::unix::fs::MetadataExt::ino(&inode)),
            "{row}"
        );

        // SAFETY: a plain kill(2) of the leader late-machine started for this test.
        unsafe { libc::kill(leader as i32, libc::SIGKILL) };
        let gone = (0..200).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{leader}/stat"));
            let dead = state.map_or(true, |s| {
                s.rsplit(") ").next().unwrap_or("").starts_with('Z')
            });
            dead || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        });
        assert!(gone, "leader {leader} did not die");
        let err = fails_cleanly(&machnet(&["routes", &name]), 6, "a dead leader");
        assert!(err.contains("is stale"), "{err}");
    }
}
