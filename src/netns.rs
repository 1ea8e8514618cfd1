//! The only module that touches namespaces: pin a process, hold its namespace fds, open a
//! netlink socket inside a namespace, and run a command there.
//!
//! Rules this module keeps (see DESIGN.md, "The one path everything takes"):
//! - A leader is pinned by pidfd before anything is read about it, and every later check
//!   (is it still alive, is it still the machine's) is made against that pidfd. The PID
//!   is never looked up again after pinning.
//! - setns only ever runs on a short-lived `std::thread` made for that purpose, or in a
//!   forked child: never on the main thread, a tokio worker or a pooled thread. No thread
//!   of machnet ever stays in another namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::CloneFlags;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags};

use crate::error::{Error, Result};
use crate::netlink::{NetlinkSocket, Protocol};

/// Namespaces `exec` may join besides the network one (nsenter's -m -u -i -p).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtraNamespaces {
    pub mount: bool,
    pub uts: bool,
    pub ipc: bool,
    pub pid: bool,
}

impl ExtraNamespaces {
    fn wanted(&self) -> impl Iterator<Item = (&'static str, CloneFlags)> {
        [
            (self.ipc, "ipc", CloneFlags::CLONE_NEWIPC),
            (self.uts, "uts", CloneFlags::CLONE_NEWUTS),
            (self.pid, "pid", CloneFlags::CLONE_NEWPID),
            (self.mount, "mnt", CloneFlags::CLONE_NEWNS),
        ]
        .into_iter()
        .filter(|(want, _, _)| *want)
        .map(|(_, name, flag)| (name, flag))
    }

    fn any(&self) -> bool {
        self.wanted().next().is_some()
    }
}

/// How the namespace we hold relates to the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A network namespace of its own.
    Private,
    /// The same namespace machnet (or PID 1) runs in: its "routes" are the host's.
    SharesHost,
}

/// A network namespace held open for the life of a command, with the process that
/// pinned it (when it came from a process).
#[derive(Debug)]
pub struct PinnedNamespace {
    /// What the user called it, for messages ("machine qbittorrent", "netns:blue").
    pub label: String,
    pub inode: u64,
    pub isolation: Isolation,
    netns: OwnedFd,
    /// The pinned process, and the other namespaces of it that `exec` was asked to join.
    process: Option<PinnedProcess>,
}

#[derive(Debug)]
struct PinnedProcess {
    pid: u32,
    pidfd: OwnedFd,
    extra: Vec<(CloneFlags, OwnedFd)>,
}

/// A process that is about to be pinned; `verify` runs after the pidfd exists and decides
/// whether the pidfd really is the process we meant (a machine's leader, say).
pub fn pin_process(
    label: String,
    pid: u32,
    extra: ExtraNamespaces,
    verify: impl FnOnce(&PidfdInfo) -> Result<()>,
) -> Result<PinnedNamespace> {
    let raw_pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::Usage(format!("{label}: {pid} is not a valid process id")))?;
    let pidfd = rustix::process::pidfd_open(raw_pid, PidfdFlags::empty()).map_err(|e| {
        if e == rustix::io::Errno::SRCH {
            Error::StaleMachine(format!("{label}: process {pid} does not exist"))
        } else {
            Error::io(format!("{label}: pinning process {pid}"), e.into())
        }
    })?;
    verify(&PidfdInfo { pid, pidfd: &pidfd })?;
    let proc_dir = PathBuf::from(format!("/proc/{pid}/ns"));
    let netns = open_ns(&proc_dir.join("net"), &label)?;
    let extra_fds = extra
        .wanted()
        .map(|(name, flag)| Ok((flag, open_ns(&proc_dir.join(name), &label)?)))
        .collect::<Result<Vec<_>>>()?;
    // The /proc paths above name a PID, not a process. Had the process died and its PID been
    // reused meanwhile, we would hold someone else's namespaces; the pidfd tells.
    if has_exited(&pidfd)? {
        return Err(Error::StaleMachine(format!(
            "{label}: process {pid} exited while machnet was opening its namespaces"
        )));
    }
    let mut pinned = PinnedNamespace::from_fd(label, netns)?;
    tracing::debug!(pid, inode = pinned.inode, isolation = ?pinned.isolation, "pinned {}", pinned.label);
    pinned.process = Some(PinnedProcess {
        pid,
        pidfd,
        extra: extra_fds,
    });
    Ok(pinned)
}

/// What `verify` may look at: the PID we were given and the pidfd now pinning it.
pub struct PidfdInfo<'a> {
    pub pid: u32,
    pub pidfd: &'a OwnedFd,
}

impl PidfdInfo<'_> {
    /// The pidfd's inode: on kernels with pidfs (6.9+) a unique id of the process, which
    /// newer systemd publishes as LeaderPIDFDId.
    pub fn inode(&self) -> Result<u64> {
        let meta = File::from(self.pidfd.try_clone().map_err(|e| Error::io("pidfd", e))?)
            .metadata()
            .map_err(|e| Error::io("pidfd", e))?;
        Ok(meta.ino())
    }

    /// The process's cgroup paths, one per hierarchy (/proc/PID/cgroup), checked to still
    /// belong to the pinned process afterwards.
    pub fn cgroups(&self) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid))
            .map_err(|e| Error::io(format!("reading the cgroup of process {}", self.pid), e))?;
        if has_exited(self.pidfd)? {
            return Err(Error::StaleMachine(format!(
                "process {} exited while machnet was checking it",
                self.pid
            )));
        }
        Ok(text
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .map(str::to_string)
            .collect())
    }
}

/// A named namespace from `ip netns add` (a bind mount under /run/netns).
pub fn pin_named(name: &str) -> Result<PinnedNamespace> {
    let path = Path::new("/run/netns").join(name);
    let fd = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NoSuchTarget(format!(
            "there is no network namespace named {name:?} under /run/netns (see `ip netns list`)"
        )),
        _ => Error::io(format!("opening {}", path.display()), e),
    })?;
    PinnedNamespace::from_fd(format!("netns:{name}"), fd.into())
}

/// The namespace machnet itself runs in.
pub fn pin_own() -> Result<PinnedNamespace> {
    let fd =
        File::open("/proc/self/ns/net").map_err(|e| Error::io("opening /proc/self/ns/net", e))?;
    PinnedNamespace::from_fd(".host".to_string(), fd.into())
}

impl PinnedNamespace {
    fn from_fd(label: String, netns: OwnedFd) -> Result<PinnedNamespace> {
        let inode = fd_inode(&netns)?;
        if !is_network_namespace(&netns) {
            return Err(Error::Usage(format!("{label} is not a network namespace")));
        }
        let isolation = if host_netns_inodes().contains(&inode) {
            Isolation::SharesHost
        } else {
            Isolation::Private
        };
        Ok(PinnedNamespace {
            label,
            inode,
            isolation,
            netns,
            process: None,
        })
    }

    /// The namespace fd itself, for requests that name a namespace by fd (RTM_GETNSID).
    pub fn netns_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.netns.as_fd()
    }

    pub fn leader(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Opens an rtnetlink socket that lives in this namespace. The socket is made on a
    /// thread of its own that enters the namespace and then ends, so no thread of ours is
    /// left behind in it; the socket keeps its namespace for life.
    pub fn open_netlink(&self) -> Result<NetlinkSocket> {
        self.open_netlink_of(Protocol::Route)
    }

    /// As [`open_netlink`](Self::open_netlink), for another netlink family.
    pub fn open_netlink_of(&self, protocol: Protocol) -> Result<NetlinkSocket> {
        let in_namespace = || -> io::Result<NetlinkSocket> {
            nix::sched::setns(self.netns.as_fd(), CloneFlags::CLONE_NEWNET)?;
            NetlinkSocket::open_in_current_netns(protocol)
        };
        let socket = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("machnet-setns".into())
                .spawn_scoped(scope, in_namespace)
                .map_err(|e| Error::io("starting a thread", e))?
                .join()
                .map_err(|_| Error::Other("the namespace thread panicked".into()))
        })?;
        socket.map_err(|e| {
            Error::io(
                format!("{}: opening a netlink socket inside", self.label),
                e,
            )
        })
    }

    /// Runs `program` with only this network namespace switched (plus `extra` when
    /// asked), waits for it, and returns its exit code (128+N for a signal, as shells do).
    pub fn exec(&self, program: &str, args: &[String], extra: ExtraNamespaces) -> Result<i32> {
        let extra_fds: Vec<(CloneFlags, i32)> = match &self.process {
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
        let netns = self.netns.as_raw_fd();
        let pid_ns = extra_fds
            .iter()
            .find(|(f, _)| *f == CloneFlags::CLONE_NEWPID)
            .map(|(_, fd)| *fd);
        let in_child: Vec<(CloneFlags, i32)> = std::iter::once((CloneFlags::CLONE_NEWNET, netns))
            .chain(
                extra_fds
                    .iter()
                    .copied()
                    .filter(|(f, _)| *f != CloneFlags::CLONE_NEWPID),
            )
            .collect();

        let mut command = Command::new(&program_path);
        command.args(args);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (setns, close_range, signal) on data prepared
        // before the fork.
        unsafe {
            command.pre_exec(move || {
                for (flag, fd) in &in_child {
                    if libc::setns(*fd, flag.bits()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // Nothing of machnet's (bus socket, pidfd, namespace fds) reaches the command:
                // mark every fd above stderr close-on-exec. (Closing them outright would also
                // close the pipe std uses to report a failed exec.)
                if libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }

        // Like system(3): while the command runs, ^C and ^\ are its business, not ours.
        let _ignore = IgnoreInteractiveSignals::new();
        let spawn = || -> io::Result<std::process::Child> {
            // A PID namespace only applies to children of the thread that joined it, so the
            // fork happens on a thread that joined it and then ends.
            if let Some(fd) = pid_ns {
                // SAFETY: fd is a namespace fd we hold open for the whole call.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                nix::sched::setns(fd, CloneFlags::CLONE_NEWPID)?;
            }
            command.spawn()
        };
        let child = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("machnet-spawn".into())
                .spawn_scoped(scope, spawn)
                .map_err(|e| Error::io("starting a thread", e))?
                .join()
                .map_err(|_| Error::Other("the spawning thread panicked".into()))
        })?;
        let mut child = child.map_err(|e| spawn_error(program, e))?;
        let status = child
            .wait()
            .map_err(|e| Error::io(format!("waiting for {program}"), e))?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// Checks that the pinned process (if any) is still alive: a namespace held through a
    /// dead leader still works, but a machine whose leader died is stale.
    pub fn leader_alive(&self) -> Result<bool> {
        match &self.process {
            Some(p) => Ok(!has_exited(&p.pidfd)?),
            None => Ok(true),
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

/// A pidfd becomes readable when its process exits.
fn has_exited(pidfd: &OwnedFd) -> Result<bool> {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let ready = rustix::event::poll(&mut fds, Some(&zero))
        .map_err(|e| Error::io("polling a pidfd", e.into()))?;
    Ok(ready > 0)
}

fn open_ns(path: &Path, label: &str) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::StaleMachine(format!(
                "{label}: {} is gone (the process exited)",
                path.display()
            )),
            _ => Error::io(format!("{label}: opening {}", path.display()), e),
        })
}

fn fd_inode(fd: &OwnedFd) -> Result<u64> {
    let stat = rustix::fs::fstat(fd).map_err(|e| Error::io("fstat on a namespace", e.into()))?;
    Ok(stat.st_ino)
}

/// NS_GET_NSTYPE tells a network namespace fd from a file that merely exists.
fn is_network_namespace(fd: &OwnedFd) -> bool {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on an fd we own.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    kind == libc::CLONE_NEWNET
}

/// The network namespaces that count as "the host": the one machnet runs in and PID 1's
/// (the latter only when readable).
pub fn host_netns_inodes() -> Vec<u64> {
    ["/proc/self/ns/net", "/proc/1/ns/net"]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.ino()))
        .collect()
}

/// Fails early, before any D-Bus call, when machnet lacks what entering another
/// namespace takes: CAP_SYS_ADMIN for setns, CAP_SYS_PTRACE to open another user's
/// /proc/PID/ns. Saying so up front beats a bare "Permission denied" halfway through.
pub fn require_privileges() -> Result<()> {
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    ]
    .into_iter()
    .filter(|(bit, _)| effective & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Permission(format!(
        "machnet lacks {} (needed to enter another network namespace); run it as root",
        missing.join(" and ")
    )))
}

/// Ignores SIGINT and SIGQUIT until dropped.
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
