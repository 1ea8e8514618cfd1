//! `machnet apply` stopped by a signal part-way: SIGTERM (systemd stopping the unit),
//! SIGINT (^C) and SIGHUP stop it, everything it changed is put back, and it exits 128+N
//! saying how many steps it undid. SIGKILL cannot be caught: the next apply converges.
//! Each in a namespace of the test's own.
//!
//! A moment is reached without timing: the apply is frozen (SIGSTOP) while the test counts
//! the routes it has made so far, and let go again (SIGCONT) until the count is reached;
//! the signal is then sent while it is frozen, and lands the moment it goes on.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Declared routes in the big set: enough that the moments below fall mid-apply.
const ROUTES: usize = 20_000;

struct Scene {
    ns: ScratchNetns,
    dir: std::path::PathBuf,
}

impl Scene {
    /// A namespace whose table holds a foreign route and two of machnet's: one the big set
    /// replaces (unreachable → blackhole at the same key) and one it deletes.
    fn new(tag: &str) -> Scene {
        let ns = ScratchNetns::new(tag);
        ns.ip(&["route", "add", "blackhole", "10.59.0.0/24"]);
        ns.ip(&[
            "route",
            "add",
            "unreachable",
            "10.61.0.0/24",
            "proto",
            "109",
        ]);
        ns.ip(&["route", "add", "prohibit", "10.60.0.0/24", "proto", "109"]);
        let dir = std::env::temp_dir().join(format!("machnet-{}", ns.name()));
        std::fs::create_dir_all(&dir).unwrap();
        Scene { ns, dir }
    }

    /// Writes the route set for this namespace: `routes` blackholes, and the replacing one.
    fn set(&self, name: &str, routes: usize) -> String {
        let mut list: Vec<String> = (0..routes)
            .map(|i| {
                format!(
                    r#"{{"destination": "10.{}.{}.{}/32", "type": "blackhole"}}"#,
                    100 + i / 65536,
                    (i / 256) % 256,
                    i % 256
                )
            })
            .collect();
        list.push(r#"{"destination": "10.61.0.0/24", "type": "blackhole"}"#.into());
        let text = format!(
            r#"{{"machines": {{"{}": {{"routes": [{}]}}}}}}"#,
            self.ns.target(),
            list.join(",")
        );
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn table(&self) -> String {
        format!(
            "{}{}",
            self.ns.ip(&["-4", "route", "show", "table", "all"]),
            self.ns.ip(&["-6", "route", "show", "table", "all"])
        )
    }

    /// How many of the set's blackholes (10.100.x.y) are in the table.
    fn ours(&self) -> usize {
        self.ns
            .ip(&["route", "show", "proto", "109"])
            .lines()
            .filter(|l| l.starts_with("blackhole 10.100."))
            .count()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_apply(file: &str) -> Child {
    Command::new(machnet_bin())
        .args(["apply", file])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("machnet apply")
}

fn kill(child: &Child, signal: i32) {
    // SAFETY: a plain kill(2) of the process this test started.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Waits until the process is stopped (SIGSTOP takes effect asynchronously).
fn wait_stopped(child: &Child) {
    for _ in 0..1000 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        if matches!(state, Some(Some('T' | 't' | 'Z')) | None) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("machnet apply did not stop");
}

/// Lets the apply run, frozen while counting, until `made` of machnet's routes exist; it
/// is left frozen there.
fn freeze_at(child: &Child, scene: &Scene, made: usize) {
    for _ in 0..20_000 {
        kill(child, libc::SIGSTOP);
        wait_stopped(child);
        let ours = scene.ours();
        assert!(
            ours < ROUTES,
            "the apply finished before the moment ({ours} routes)"
        );
        if ours >= made {
            return;
        }
        kill(child, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the apply never made {made} routes");
}

#[test]
fn each_stop_signal_at_each_moment_puts_the_table_back() {
    let _bed = testbed();
    let scene = Scene::new("sig");
    let big = scene.set("big.json", ROUTES);
    let before = scene.table();
    // (signal, routes made when it comes, a second signal during the undo)
    let cases = [
        (libc::SIGTERM, 1, None),
        (libc::SIGTERM, ROUTES / 2, None),
        (libc::SIGINT, 1, None),
        (libc::SIGINT, ROUTES / 2, Some(libc::SIGINT)),
        (libc::SIGHUP, 1, None),
        (libc::SIGHUP, ROUTES / 2, Some(libc::SIGTERM)),
    ];
    for (signal, moment, again) in cases {
        let child = start_apply(&big);
        freeze_at(&child, &scene, moment);
        kill(&child, signal);
        kill(&child, libc::SIGCONT);
        if let Some(second) = again {
            // Once the undo has begun (the count falls), a second signal must not cut
            // it short.
            let peak = scene.ours();
            for _ in 0..10_000 {
                if scene.ours() < peak {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            kill(&child, second);
        }
        let out = child.wait_with_output().unwrap();
        let what = format!("signal {signal} after {moment} routes");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(128 + signal), "{what}: {err}");
        assert!(out.stdout.is_empty(), "{what}: {:?}", stdout(&out));
        assert!(err.contains("stopped by SIG"), "{what}: {err}");
        assert!(
            err.contains("everything changed in netns:") && err.contains("steps undone)"),
            "{what}: {err}"
        );
        assert_eq!(scene.table(), before, "{what}: the table is as it was");
    }
}

#[test]
fn after_sigkill_the_next_apply_converges() {
    let _bed = testbed();
    let scene = Scene::new("kill");
    let small = scene.set("small.json", 3);
    let big = scene.set("big.json", ROUTES);
    ok(machnet(&["apply", &small]), "apply the old set");
    let old = scene.table();

    let child = start_apply(&big);
    freeze_at(&child, &scene, ROUTES / 2);
    kill(&child, libc::SIGKILL);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed");
    assert_ne!(scene.table(), old, "half the new set was left behind");

    // The old set again: back to exactly the old table.
    ok(
        machnet(&["apply", &small]),
        "apply the old set after SIGKILL",
    );
    assert_eq!(scene.table(), old);
    // Or the new set, killed again half-way and then applied to the end: in sync.
    let child = start_apply(&big);
    freeze_at(&child, &scene, ROUTES / 2);
    kill(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    ok(machnet(&["apply", &big]), "apply the new set after SIGKILL");
    let check = machnet(&["apply", "--check", &big]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert_eq!(scene.ours(), ROUTES);
}
