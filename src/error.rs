//! One error type for the whole tool, and the exit code each kind of failure maps to.
//!
//! Every variant's message is one sentence that says what failed and, where there is
//! one, what to do about it. main prints it on stderr and exits with [`Error::exit_code`],
//! so scripts can tell "no such machine" from "machined is down" without parsing text.

use std::io;

/// Exit codes, documented in the man page (see cli.rs). 1 is reserved for "anything else".
pub mod exit {
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NO_SUCH_TARGET: i32 = 3;
    pub const MACHINED_UNAVAILABLE: i32 = 4;
    pub const PERMISSION: i32 = 5;
    pub const STALE_MACHINE: i32 = 6;
    pub const KERNEL: i32 = 7;
    pub const INCONSISTENT_DUMP: i32 = 8;
    /// `apply --check`: the routes differ from the declared set.
    pub const OUT_OF_SYNC: i32 = 9;
    /// `apply`: a declared route has the key of a route machnet does not own.
    pub const CONFLICT: i32 = 10;
    /// `audit`: the worst finding is a warning / an error.
    pub const AUDIT_WARNING: i32 = 11;
    pub const AUDIT_ERROR: i32 = 12;
    /// A command over many machines printed everything it could, but one or more machines
    /// could not be read (their rows or notes say why).
    pub const PARTIAL: i32 = 13;
    /// `why`: a hop of the path fails (why reads one machine, so it is never partial).
    pub const WHY_BLOCKED: i32 = 13;
    /// `why`: no hop fails, but one cannot be judged.
    pub const WHY_UNKNOWN: i32 = 14;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    NoSuchTarget(String),

    #[error("cannot reach systemd-machined on the system bus ({detail}); is systemd-machined running and DBUS_SYSTEM_BUS_ADDRESS right?")]
    MachinedUnavailable { detail: String },

    #[error("{0}")]
    Permission(String),

    #[error("{0}")]
    StaleMachine(String),

    /// The kernel refused a netlink request; `says` is its own sentence (extended ack)
    /// when it gave one, else the errno's text.
    #[error("{context}: the kernel said: {says}")]
    Kernel {
        context: String,
        source: io::Error,
        says: String,
    },

    #[error("{0}")]
    InconsistentDump(String),

    #[error("{0}")]
    Conflict(String),

    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },

    /// exec could not start the command; the code follows nsenter (127 not found, 126).
    #[error("{message}")]
    Exec { message: String, code: i32 },

    /// A stop signal (SIGTERM, SIGINT, SIGHUP) ended the command early; exit 128+signal,
    /// as a shell reports a process the signal killed.
    #[error("{message}")]
    Interrupted { signal: i32, message: String },

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NoSuchTarget(_) => exit::NO_SUCH_TARGET,
            Error::MachinedUnavailable { .. } => exit::MACHINED_UNAVAILABLE,
            Error::Permission(_) => exit::PERMISSION,
            Error::StaleMachine(_) => exit::STALE_MACHINE,
            Error::Kernel { .. } => exit::KERNEL,
            Error::InconsistentDump(_) => exit::INCONSISTENT_DUMP,
            Error::Conflict(_) => exit::CONFLICT,
            Error::Exec { code, .. } => *code,
            Error::Interrupted { signal, .. } => 128 + signal,
            Error::Io { .. } | Error::Other(_) => exit::FAILURE,
        }
    }

    /// An I/O error with what we were doing; EPERM/EACCES become a permission error (exit
    /// 5) so scripts can tell "run me as root" from other failures. Which capability a
    /// namespace entry needs is said up front by netns::require_privileges.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                Error::Permission(format!("{context}: {source}"))
            }
            _ => Error::Io { context, source },
        }
    }

    /// A netlink refusal: errno plus, when the kernel gave one, its extended-ack message.
    pub fn kernel(context: impl Into<String>, errno: i32, message: Option<String>) -> Error {
        let context = context.into();
        let source = io::Error::from_raw_os_error(errno);
        let says = match message {
            Some(text) => format!("{text} ({source})"),
            None => source.to_string(),
        };
        // EPERM is a missing capability; EACCES is not (a `prohibit` route answers a
        // route lookup with it), so only the first becomes a permission error.
        match errno {
            libc::EPERM => Error::Permission(format!(
                "{context}: the kernel said: {says}; this needs CAP_NET_ADMIN (run as root)"
            )),
            _ => Error::Kernel {
                context,
                source,
                says,
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
