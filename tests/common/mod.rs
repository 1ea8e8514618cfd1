//! Shared by the integration tests: the real testbed (scripts/testbed) and ways to run
//! machnet and `ip` against it.
//!
//! These tests need root and the testbed that `scripts/test` brings up inside a throwaway
//! network and mount namespace. Without it they fail with a message saying so: they never
//! skip, so a run without a testbed cannot pass by accident.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub struct Testbed {
    pub dir: PathBuf,
    /// machine name → (leader pid, netns path)
    pub machines: HashMap<String, (u32, String)>,
}

pub fn testbed() -> Testbed {
    let dir = match std::env::var("MACHNET_TESTBED_DIR") {
        Ok(dir) if std::env::var("MACHNET_TESTBED").as_deref() == Ok("1") => PathBuf::from(dir),
        _ => panic!(
            "these tests need the real testbed (systemd-machined, an nspawn container, netns \
             machines) and root: run them with `scripts/test`, not plain `cargo test`"
        ),
    };
    let tsv = std::fs::read_to_string(dir.join("machines.tsv")).expect("testbed machines.tsv");
    let machines = tsv
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                (
                    f[1].parse().expect("leader pid"),
                    f.get(2).unwrap_or(&"").to_string(),
                ),
            )
        })
        .collect();
    Testbed { dir, machines }
}

impl Testbed {
    pub fn leader(&self, machine: &str) -> u32 {
        self.machines
            .get(machine)
            .unwrap_or_else(|| panic!("testbed has no machine {machine}"))
            .0
    }

    /// Waits (bounded) until the machine's links and addresses have settled: no IPv6
    /// address still tentative, and `ip -br addr` unchanged over 100 ms. Right after
    /// bring-up a veth's carrier and its link-local address arrive asynchronously, and a
    /// test comparing two reads must not straddle that.
    pub fn settle_ipv6(&self, machine: &str) {
        let brief = || self.ip(machine, &["-br", "addr"]).stdout;
        for _ in 0..50 {
            let tentative = self.ip(machine, &["-6", "addr", "show", "tentative"]);
            let before = brief();
            std::thread::sleep(std::time::Duration::from_millis(100));
            if tentative.status.success() && tentative.stdout.is_empty() && brief() == before {
                return;
            }
        }
        panic!("links and addresses in {machine} did not settle within 5 s");
    }

    /// The version of the systemd-machined on the testbed (252 on Debian 12; 262 when
    /// `scripts/test --systemd sid` runs).
    pub fn systemd_version(&self) -> u32 {
        std::env::var("MACHNET_TESTBED_SYSTEMD_VERSION")
            .expect("scripts/testbed sets MACHNET_TESTBED_SYSTEMD_VERSION")
            .parse()
            .expect("a systemd version number")
    }

    /// Whether machined publishes its machines' LeaderPIDFDId (262 does; 252 and 257 do
    /// not), and so checks a leader by its pidfd rather than by its PID alone.
    pub fn machined_knows_leader_pidfds(&self) -> bool {
        self.systemd_version() >= 262
    }

    /// `ip ARGS` inside a machine's network namespace (nsenter by the leader PID, as a
    /// user would do it by hand).
    pub fn ip(&self, machine: &str, args: &[&str]) -> Output {
        let leader = self.leader(machine).to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &leader, "-n", "ip"]).args(args);
        run(cmd)
    }
}

/// Straight to the test's stderr, past libtest's capture (which takes only the print
/// macros), so what a run could not try (a kernel feature, a machined method) shows in
/// every run, passing or not.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub fn machnet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_machnet")
}

pub fn machnet(args: &[&str]) -> Output {
    let mut cmd = Command::new(machnet_bin());
    cmd.args(args);
    run(cmd)
}

/// machnet with `input` on its stdin.
pub fn machnet_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(machnet_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running machnet {args:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed with {:?}\nstderr: {}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts a clean failure: the given exit code, nothing on stdout, one message on stderr.
pub fn fails_cleanly(out: &Output, code: i32, what: &str) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit code; stderr: {err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout must stay empty, got {:?}",
        stdout(out)
    );
    // Notes (say, "this machine shares the host's netns") may precede the one error line.
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("machnet: note: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{what}: one error line on stderr, got {err:?}"
    );
    assert!(errors[0].starts_with("machnet: "), "{what}: stderr {err:?}");
    errors[0].to_string()
}

/// A dump with every `expires Nsec` counter masked: those tick while a test runs, so
/// whole-table comparisons look at everything else.
pub fn mask_expires(dump: &str) -> String {
    let mut out = String::with_capacity(dump.len());
    let mut rest = dump;
    while let Some(at) = rest.find("expires ") {
        out.push_str(&rest[..at + 8]);
        rest = rest[at + 8..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

/// A line with its `expires Nsec` counter taken out: (the line with `expires N`, N).
pub fn split_expires(line: &str) -> (String, Option<u64>) {
    match line.find("expires ") {
        Some(at) => {
            let rest = &line[at + 8..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (
                format!("{}expires N{}", &line[..at], &rest[digits.len()..]),
                digits.parse().ok(),
            )
        }
        None => (line.to_string(), None),
    }
}

/// A process a test started, killed (by its PID) when the test ends, passing or not.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sh -ec SCRIPT`, which must succeed; its stdout.
pub fn sh(script: &str) -> String {
    let mut cmd = Command::new("sh");
    cmd.args(["-ec", script]);
    ok(run(cmd), script)
}

/// Ends a process a test started, by PID, and unregisters the machine it led (if any)
/// from machined, so no stale machine outlives the test that made it.
pub struct MachineLeader {
    pub pid: i32,
    pub machine: Option<String>,
}

impl Drop for MachineLeader {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the process this test made.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        if let Some(name) = &self.machine {
            let mut unregister = Command::new("busctl");
            unregister.args([
                "--system",
                "--timeout=5",
                "call",
                "org.freedesktop.machine1",
                "/org/freedesktop/machine1",
                "org.freedesktop.machine1.Manager",
                "UnregisterMachine",
                "s",
                name,
            ]);
            let _ = unregister.stdin(Stdio::null()).output();
        }
    }
}

/// A network namespace of one test's own (`ip netns add NAME-PID`), for changes no other
/// test may see; deleted when dropped, also when the test fails.
pub struct ScratchNetns(String);

impl ScratchNetns {
    pub fn new(tag: &str) -> ScratchNetns {
        // Tests of one binary run in parallel: the counter keeps their names apart.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{tag}-{}-{n}", std::process::id());
        let mut add = Command::new("ip");
        add.args(["netns", "add", &name]);
        ok(run(add), "ip netns add");
        let ns = ScratchNetns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `ip -n NAME ARGS`, which must succeed; its stdout.
    pub fn ip<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.0]).args(args);
        ok(run(cmd), &format!("ip -n {}", self.0))
    }

    /// The namespace as a machnet target.
    pub fn target(&self) -> String {
        format!("netns:{}", self.0)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let mut del = Command::new("ip");
        del.args(["netns", "del", &self.0]);
        let _ = run(del);
    }
}
