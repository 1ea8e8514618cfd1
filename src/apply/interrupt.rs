//! SIGTERM, SIGINT and SIGHUP during `machnet apply`: noted, not obeyed at once.
//!
//! systemd stops a unit (or gives up on its start) with SIGTERM; a person presses ^C. Dying
//! there would leave a machine's table half changed, so apply catches the three, finishes
//! the datagram in flight (its outcome is then known), stops sending, puts back what it
//! changed as it does for a kernel refusal, and exits 128+N. The handler only records the
//! signal: everything else happens on apply's own path, between datagrams. SA_RESTART keeps
//! the netlink reads going through the signal. (SIGKILL cannot be caught: the next apply
//! converges the table from wherever it was left.)

use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

/// The first stop signal caught, or 0.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

extern "C" fn record(signal: libc::c_int) {
    // Only the first counts: a second ^C during the undo must not cut the undo short.
    let _ = CAUGHT.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// From here on, the stop signals are recorded instead of ending the process.
pub fn catch_stop_signals() -> Result<()> {
    for signal in STOP_SIGNALS {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic, which
        // is async-signal-safe; the old action is not needed.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(Error::io(
                "installing apply's signal handlers",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// The stop signal caught so far, if any.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
