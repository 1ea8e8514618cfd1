//! `exec`: a host command with the machine's network namespace (and, when asked, its
//! mount, UTS, IPC and PID namespaces), behaving as nsenter does for the caller:
//!
//! - file descriptors the caller handed to machnet (`3<file`, LISTEN_FDS) reach the
//!   command; machnet's own (bus socket, pidfd, namespace fds) never do;
//! - ^C and ^\ go to the command (machnet ignores them while it waits, like system(3)),
//!   and the command starts with the dispositions machnet inherited;
//! - termination signals sent to machnet (SIGTERM, SIGHUP, …) are passed on to the
//!   command, which nsenter gets for free by exec'ing in place;
//! - the exit status comes back (128+N for a signal).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use nix::sched::CloneFlags;

use super::{ExtraNamespaces, PinnedNamespace};
use crate::error::{Error, Result};

/// File descriptors open when machnet started: the caller's, passed on to commands.
static INHERITED_FDS: OnceLock<Vec<RawFd>> = OnceLock::new();
/// Probing this many fds at start-up covers what a caller plausibly passes down.
const FD_PROBE_LIMIT: RawFd = 1024;
/// The running command, for the signal forwarder.
static CHILD_PID: AtomicI32 = AtomicI32::new(0);
/// Signals that ask machnet to end, passed on to the command instead.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
];

/// Records which fds above stderr the caller gave machnet. Call first thing in main,
/// before machnet opens anything of its own.
pub fn remember_inherited_fds() {
    // SAFETY: F_GETFD only reads the fd table.
    let is_open = |fd: &RawFd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0;
    // /proc/self/fd names them in a few system calls; its listing includes the
    // directory's own fd, which is closed again (and so filtered out) by the time each
    // is checked. Without /proc, probe every fd up to the limit.
    let listed: Option<Vec<RawFd>> = std::fs::read_dir("/proc/self/fd").ok().map(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect()
    });
    let open = match listed {
        Some(fds) => fds.into_iter().filter(is_open).collect(),
        None => (3..FD_PROBE_LIMIT).filter(is_open).collect(),
    };
    let _ = INHERITED_FDS.set(open);
}

impl PinnedNamespace {
    /// Runs `program` with this network namespace (plus `extra` when asked), waits for it
    /// and returns its exit code (128+N for a signal, as shells do).
    pub fn exec(&self, program: &str, args: &[String], extra: ExtraNamespaces) -> Result<i32> {
        let extra_fds: Vec<(CloneFlags, RawFd)> = match &self.process {
            Some(p) => p.extra.iter().map(|(f, fd)| (*f, fd.as_raw_fd())).collect(),
            None if extra.any() => {
                return Err(Error::Usage(format!(
                    "{} is a bare network namespace with no process to take mount/uts/ipc/pid \
                     namespaces from; use a machine or pid:N target for -m/-u/-i/-p",
                    self.label
                )))
            }
            None => Vec::new(),
        };
        // Resolve the program on the host before forking, unless it is to be found inside
        // the machine's own file system (-m), as nsenter does.
        let program_path = if extra.mount {
            PathBuf::from(program)
        } else {
            resolve_program(program)?
        };
        let pid_ns = extra_fds
            .iter()
            .find(|(f, _)| *f == CloneFlags::CLONE_NEWPID)
            .map(|(_, fd)| *fd);
        // Entering the namespace we are already in needs privileges and changes nothing.
        let net =
            (!self.is_current()).then_some((CloneFlags::CLONE_NEWNET, self.netns.as_raw_fd()));
        let in_child: Vec<(CloneFlags, RawFd)> = net
            .into_iter()
            .chain(
                extra_fds
                    .iter()
                    .copied()
                    .filter(|(f, _)| *f != CloneFlags::CLONE_NEWPID),
            )
            .collect();

        close_own_fds_on_exec();
        // Like system(3): while the command runs, ^C and ^\ are its business, not ours.
        let ignore = IgnoreInteractiveSignals::new();
        let restore = ignore.previous;

        let mut command = Command::new(&program_path);
        // argv[0] as the user typed it, as nsenter and a shell pass it.
        command.arg0(program).args(args);
        // SAFETY: runs in the forked child before exec and only makes async-signal-safe
        // system calls (setns, signal) on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                for (flag, fd) in &in_child {
                    if libc::setns(*fd, flag.bits()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                libc::signal(libc::SIGINT, restore[0]);
                libc::signal(libc::SIGQUIT, restore[1]);
                Ok(())
            });
        }
        let spawn = || -> io::Result<std::process::Child> {
            // A PID namespace only applies to children of the thread that joined it, so the
            // fork happens on a thread that joins it and then ends.
            if let Some(fd) = pid_ns {
                // SAFETY: fd is a namespace fd we hold open for the whole call.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                nix::sched::setns(fd, CloneFlags::CLONE_NEWPID)?;
            }
            command.spawn()
        };
        let child = super::on_a_thread_of_its_own("machnet-spawn", spawn)?;
        let mut child = child.map_err(|e| spawn_error(program, e))?;
        let forwarding = ForwardSignals::to(child.id() as i32);
        let status = child
            .wait()
            .map_err(|e| Error::io(format!("waiting for {program}"), e));
        drop(forwarding);
        drop(ignore);
        let status = status?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

impl PinnedNamespace {
    /// Runs `program` (found on the host's PATH) with this network namespace only, and
    /// collects its output: for tools machnet reads in a machine, as `nft -j list
    /// ruleset`. stdin is /dev/null; nothing of machnet's own is inherited (its fds are
    /// close-on-exec).
    pub fn output(&self, program: &str, args: &[&str]) -> Result<std::process::Output> {
        self.command_inside(program, args)?
            .output()
            .map_err(|e| spawn_error(program, e))
    }

    /// Starts `program` as [`output`](Self::output) runs it, with its stdout piped, and
    /// leaves it running: for watchers such as `nft monitor trace`. The caller ends it.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<std::process::Child> {
        self.command_inside(program, args)?
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| spawn_error(program, e))
    }

    fn command_inside(&self, program: &str, args: &[&str]) -> Result<Command> {
        let program_path = resolve_program(program)?;
        let net = (!self.is_current()).then_some(self.netns.as_raw_fd());
        let mut command = Command::new(&program_path);
        command.args(args).stdin(std::process::Stdio::null());
        // SAFETY: runs in the forked child before exec and only calls setns(2) on an fd
        // held open for as long as the namespace is pinned.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = net {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(command)
    }
}

/// Marks every fd above stderr that the caller did not give us close-on-exec. machnet's
/// fds are opened close-on-exec already; this makes sure of it without touching the
/// caller's own.
fn close_own_fds_on_exec() {
    let inherited = INHERITED_FDS.get().map(Vec::as_slice).unwrap_or(&[]);
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let ours: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !inherited.contains(fd))
        .collect();
    for fd in ours {
        // SAFETY: setting FD_CLOEXEC on an fd of ours; a stale number (the directory
        // stream's own fd, closed by now) just fails.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// exec's failures are reported the way nsenter reports them: 127 for a command that is
/// not there, 126 for one that cannot run.
fn spawn_error(program: &str, e: io::Error) -> Error {
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Error::Exec {
        message: format!("cannot run {program}: {e}"),
        code,
    }
}

fn resolve_program(program: &str) -> Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::Exec {
            message: format!("cannot run {program}: not found in PATH"),
            code: 127,
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Ignores SIGINT and SIGQUIT until dropped, remembering what they were.
struct IgnoreInteractiveSignals {
    previous: [libc::sighandler_t; 2],
}

impl IgnoreInteractiveSignals {
    fn new() -> Self {
        // SAFETY: installing SIG_IGN is always sound.
        let previous = unsafe {
            [
                libc::signal(libc::SIGINT, libc::SIG_IGN),
                libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            ]
        };
        IgnoreInteractiveSignals { previous }
    }
}

impl Drop for IgnoreInteractiveSignals {
    fn drop(&mut self) {
        // SAFETY: restoring the handlers we replaced.
        unsafe {
            libc::signal(libc::SIGINT, self.previous[0]);
            libc::signal(libc::SIGQUIT, self.previous[1]);
        }
    }
}

/// Passes FORWARDED signals on to the command until dropped.
struct ForwardSignals {
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
}

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

impl ForwardSignals {
    fn to(pid: i32) -> Self {
        CHILD_PID.store(pid, Ordering::SeqCst);
        let previous = FORWARDED
            .iter()
            // SAFETY: the handler only calls kill(2) with an atomic's value.
            .map(|sig| {
                (*sig, unsafe {
                    libc::signal(*sig, forward as *const () as libc::sighandler_t)
                })
            })
            .collect();
        ForwardSignals { previous }
    }
}

impl Drop for ForwardSignals {
    fn drop(&mut self) {
        for (sig, handler) in &self.previous {
            // SAFETY: restoring the handlers we replaced.
            unsafe { libc::signal(*sig, *handler) };
        }
        CHILD_PID.store(0, Ordering::SeqCst);
    }
}
