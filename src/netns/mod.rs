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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sched::CloneFlags;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags};

use crate::error::{Error, Result};

mod exec;
use crate::netlink::{NetlinkSocket, Protocol};
pub use exec::remember_inherited_fds;

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
    /// A socket made ahead of need by [`prepare_netlink`](Self::prepare_netlink).
    prepared: Mutex<Option<(Protocol, NetlinkSocket)>>,
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
    let pidfd = rustix::process::pidfd_open(raw_pid, PidfdFlags::empty()).map_err(|e| match e {
        rustix::io::Errno::SRCH => Error::StaleMachine(format!("{label}: process {pid} does not exist")),
        // pidfd_open takes only a process (thread-group leader), not another thread.
        rustix::io::Errno::INVAL | rustix::io::Errno::NOENT => Error::NoSuchTarget(format!(
            "{label}: {pid} is a thread, not a process; use its process id (Tgid in /proc/{pid}/status)"
        )),
        _ => Error::io(format!("{label}: pinning process {pid}"), e.into()),
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

    /// When the process started, in clock ticks since boot (/proc/PID/stat field 22,
    /// CLOCK_BOOTTIME), checked to still belong to the pinned process afterwards.
    pub fn start_ticks(&self) -> Result<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map_err(|e| Error::io(format!("reading the start time of process {}", self.pid), e))?;
        if has_exited(self.pidfd)? {
            return Err(Error::StaleMachine(format!(
                "process {} exited while machnet was checking it",
                self.pid
            )));
        }
        // The command name (field 2) is in parentheses and may hold spaces or ')': the
        // fields after it start past the last ')'. starttime is the 20th of those.
        text.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(19))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Other(format!("/proc/{}/stat has no start time", self.pid)))
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
    // Non-blocking: a FIFO planted under /run/netns must not hang us (it then fails the
    // namespace check below).
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.kind() {
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
            prepared: Mutex::new(None),
        })
    }

    /// Makes the socket the command will ask for next, now: the direct path to machined
    /// does this while it waits for the leader re-check, so the thread that enters the
    /// namespace runs while the bus answers. A failure is left for the real open to meet.
    pub fn prepare_netlink(&self, protocol: Protocol, maker: SocketMaker) {
        if let Ok(sock) = self.make_netlink(protocol, Some(maker)) {
            *self.prepared.lock().unwrap_or_else(|e| e.into_inner()) = Some((protocol, sock));
        }
    }

    /// True when the calling thread is in this very namespace.
    fn is_current(&self) -> bool {
        std::fs::metadata("/proc/thread-self/ns/net").is_ok_and(|m| m.ino() == self.inode)
    }

    /// Runs `work` on a thread of its own that first enters this namespace, and ends with
    /// it (see on_a_thread_of_its_own): for a socket made or a file read inside.
    fn inside<T: Send>(
        &self,
        name: &str,
        work: impl FnOnce() -> io::Result<T> + Send,
    ) -> Result<io::Result<T>> {
        let netns = self.netns.as_fd();
        on_a_thread_of_its_own(name, move || {
            nix::sched::setns(netns, CloneFlags::CLONE_NEWNET)?;
            work()
        })
    }

    /// A UDP socket bound to `bind` inside this namespace: what a resolver inside the
    /// machine would send from.
    pub fn udp_socket(&self, bind: std::net::SocketAddr) -> Result<std::net::UdpSocket> {
        self.inside("machnet-udp", move || std::net::UdpSocket::bind(bind))?
            .map_err(|e| Error::io(format!("{}: making a UDP socket inside", self.label), e))
    }

    /// A TCP connect from inside this namespace, waiting at most `timeout`: what a program
    /// in the machine would get. The connection, if made, is closed at once.
    pub fn tcp_connect(
        &self,
        to: std::net::SocketAddr,
        timeout: std::time::Duration,
    ) -> Result<io::Result<()>> {
        self.inside("machnet-tcp", move || {
            std::net::TcpStream::connect_timeout(&to, timeout).map(drop)
        })
    }

    /// A file of /proc/net as seen from inside this namespace (`udp`, `tcp6`, ...).
    pub fn read_proc_net(&self, file: &str) -> Result<String> {
        let path = format!("/proc/thread-self/net/{file}");
        self.inside("machnet-procnet", || std::fs::read_to_string(&path))?
            .map_err(|e| {
                Error::io(
                    format!("{}: reading /proc/net/{file} inside", self.label),
                    e,
                )
            })
    }

    /// The namespace fd itself, for requests that name a namespace by fd (RTM_GETNSID).
    pub fn netns_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.netns.as_fd()
    }

    pub fn leader(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// The inode of the pinned process's PID namespace, the PIDs `ss` inside would show;
    /// checked against the pidfd as the network namespace was. None for a namespace not
    /// pinned through a process (netns:NAME, .host): its view of PIDs is ours.
    pub fn pid_namespace_inode(&self) -> Result<Option<u64>> {
        let Some(p) = &self.process else {
            return Ok(None);
        };
        let ns = open_ns(Path::new(&format!("/proc/{}/ns/pid", p.pid)), &self.label)?;
        if has_exited(&p.pidfd)? {
            return Err(Error::StaleMachine(format!(
                "{}: process {} exited while machnet was reading its PID namespace",
                self.label, p.pid
            )));
        }
        fd_inode(&ns).map(Some)
    }

    /// Opens an rtnetlink socket that lives in this namespace. The socket is made on a
    /// thread of its own that enters the namespace and then ends, so no thread of ours is
    /// left behind in it; the socket keeps its namespace for life.
    pub fn open_netlink(&self) -> Result<NetlinkSocket> {
        self.open_netlink_of(Protocol::Route)
    }

    /// As [`open_netlink`](Self::open_netlink), for another netlink family.
    pub fn open_netlink_of(&self, protocol: Protocol) -> Result<NetlinkSocket> {
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match prepared {
            Some((made_for, sock)) if made_for == protocol => Ok(sock),
            _ => self.make_netlink(protocol, None),
        }
    }

    /// A socket in this namespace: made right here when we are in it already, else by
    /// `maker`'s waiting thread, or else by a thread started for it.
    fn make_netlink(
        &self,
        protocol: Protocol,
        maker: Option<SocketMaker>,
    ) -> Result<NetlinkSocket> {
        if self.is_current() {
            // Already here (.host, or a machine sharing our namespace): no setns, so this
            // works without privileges, as `ip` does.
            return NetlinkSocket::open_in_current_netns(protocol)
                .map_err(|e| Error::io(format!("{}: opening a netlink socket", self.label), e));
        }
        if let Some(maker) = maker {
            return maker.make(self, protocol);
        }
        let in_namespace = || socket_inside(self.netns.as_fd(), protocol);
        on_a_thread_of_its_own("machnet-setns", in_namespace)?.map_err(|e| {
            Error::io(
                format!("{}: opening a netlink socket inside", self.label),
                e,
            )
        })
    }

    /// Opens an rtnetlink socket in each of `namespaces`, all on one thread of its own that
    /// enters them in turn and then ends, as [`open_netlink`](Self::open_netlink) does for
    /// one. For reading many machines: a thread per namespace, each with a 2 MiB stack
    /// mapped and unmapped, cost more than reading their tables (BENCHMARKS.md).
    pub fn open_netlink_each(namespaces: &[&PinnedNamespace]) -> Vec<Result<NetlinkSocket>> {
        let in_each = || -> Vec<Result<NetlinkSocket>> {
            namespaces
                .iter()
                .map(|ns| {
                    socket_inside(ns.netns.as_fd(), Protocol::Route).map_err(|e| {
                        Error::io(format!("{}: opening a netlink socket inside", ns.label), e)
                    })
                })
                .collect()
        };
        match on_a_thread_of_its_own("machnet-setns", in_each) {
            Ok(sockets) => sockets,
            Err(e) => namespaces
                .iter()
                .map(|_| Err(Error::Other(e.to_string())))
                .collect(),
        }
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

/// Moves the calling thread into `netns` and makes a socket there. Only for threads that
/// end right after (on_a_thread_of_its_own, SocketMaker): the thread stays moved.
fn socket_inside(netns: BorrowedFd<'_>, protocol: Protocol) -> io::Result<NetlinkSocket> {
    nix::sched::setns(netns, CloneFlags::CLONE_NEWNET)?;
    NetlinkSocket::open_in_current_netns(protocol)
}

/// A thread started before the namespace it is to enter is known: it waits, enters the
/// namespace it is handed, makes one socket there and ends. Starting a thread costs about
/// a twentieth of `machnet routes NAME`; started while machined is still answering, that
/// cost is off the path. Dropped unused, the thread ends without entering anything.
pub struct SocketMaker {
    /// Taken when the job is sent; dropping it unsent tells the thread to end.
    job: Option<std::sync::mpsc::SyncSender<(OwnedFd, Protocol)>>,
    made: std::sync::mpsc::Receiver<io::Result<NetlinkSocket>>,
    /// Joined when the socket is made, or when the maker is dropped unused.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketMaker {
    pub fn start() -> Result<SocketMaker> {
        let (job, jobs) = std::sync::mpsc::sync_channel::<(OwnedFd, Protocol)>(1);
        let (done, made) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("machnet-setns".into())
            .spawn(move || {
                let Ok((netns, protocol)) = jobs.recv() else {
                    return; // not needed after all
                };
                let _ = done.send(socket_inside(netns.as_fd(), protocol));
            })
            .map_err(|e| Error::io("starting a thread", e))?;
        Ok(SocketMaker {
            job: Some(job),
            made,
            thread: Some(thread),
        })
    }

    /// The socket, made in `namespace`; the thread has ended when this returns.
    fn make(mut self, namespace: &PinnedNamespace, protocol: Protocol) -> Result<NetlinkSocket> {
        let label = || format!("{}: opening a netlink socket inside", namespace.label);
        let netns = namespace
            .netns
            .try_clone()
            .map_err(|e| Error::io(label(), e))?;
        let job = self.job.take().expect("a maker makes one socket");
        let sent = job.send((netns, protocol));
        let made = self.made.recv();
        self.end()?;
        match (sent, made) {
            (Ok(()), Ok(socket)) => socket.map_err(|e| Error::io(label(), e)),
            _ => Err(Error::Other("the thread machnet-setns ended early".into())),
        }
    }

    /// Lets the thread go (if no job was sent) and waits for it to end.
    fn end(&mut self) -> Result<()> {
        self.job.take();
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(_)) => Err(Error::Other("the thread machnet-setns panicked".into())),
            _ => Ok(()),
        }
    }
}

impl Drop for SocketMaker {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// Runs `work` on a thread made for it that ends when `work` returns: the only kind of
/// thread here that may call setns (see the module's notes).
pub(crate) fn on_a_thread_of_its_own<T: Send>(
    name: &str,
    work: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(scope, work)
            .map_err(|e| Error::io("starting a thread", e))?
            .join()
            .map_err(|_| Error::Other(format!("the thread {name} panicked")))
    })
}

/// Lets the process hold as many descriptors as its hard limit allows. Commands that read
/// every machine hold two per machine (pidfd, netns) for as long as they run, and the usual
/// soft limit of 1024 stopped them near 500 machines with EMFILE. machnet uses epoll, never
/// select(2) (the reason that soft limit is low); only commands that pin every machine call
/// this, so `exec` hands its command the limits it was given.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on a valid rlimit of the type they take.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!(
                    "could not raise the open file limit: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }
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
        "machnet lacks {} (needed to enter another network namespace); run it as root, or \
         grant it CAP_SYS_ADMIN and CAP_SYS_PTRACE (a systemd unit's CapabilityBoundingSet \
         needs both)",
        missing.join(" and ")
    )))
}
