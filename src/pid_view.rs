//! PIDs as a machine sees them. `ss -p` run inside a container reads the container's own
//! /proc, so it names processes by their PIDs in the container's PID namespace and does
//! not see processes outside it. [`PidView`] turns a host PID into that PID, or says the
//! process is invisible from there.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// ioctl(NS_GET_PARENT): the parent of a PID namespace, EPERM past our own.
const NS_GET_PARENT: libc::c_ulong = 0xb702;

pub struct PidView {
    /// The machine's PID namespace, or None when it is ours (every PID is as we see it).
    namespace: Option<u64>,
}

impl PidView {
    /// The view from the PID namespace with this inode (None: ours).
    pub fn from_namespace(inode: Option<u64>) -> PidView {
        let ours = File::open("/proc/self/ns/pid")
            .ok()
            .and_then(|f| namespace_inode(&f));
        PidView {
            namespace: inode.filter(|i| Some(*i) != ours),
        }
    }

    /// The PID the process with this host PID has in the view, None if it lives outside
    /// the view's namespace (or vanished while we looked).
    pub fn pid_of(&self, host_pid: u32) -> Option<u32> {
        let Some(want) = self.namespace else {
            return Some(host_pid);
        };
        let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
        // NSpid: the PID in each namespace from ours down to the process's own.
        let nspids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let mut ns = File::open(format!("/proc/{host_pid}/ns/pid"))
            .ok()
            .map(OwnedFd::from)?;
        // Walk up from the process's own namespace: `up` levels above it, its PID is the
        // entry `up` places from the end.
        for up in 0..nspids.len() {
            if namespace_inode(&ns) == Some(want) {
                return Some(nspids[nspids.len() - 1 - up]);
            }
            ns = parent_namespace(&ns)?;
        }
        None
    }
}

fn namespace_inode(fd: impl AsFd) -> Option<u64> {
    rustix::fs::fstat(fd).ok().map(|s| s.st_ino)
}

fn parent_namespace(ns: &OwnedFd) -> Option<OwnedFd> {
    // SAFETY: an ioctl without arguments on an fd we own; it returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT as _) };
    // SAFETY: a fresh fd the kernel just gave us, owned from here on.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
