//! Declarative routes: bring one machine's table to a declared set (`machnet apply`).
//!
//! snapshot (read what is there) → plan (plan.rs, pure) → execute, pipelined → on any
//! refusal, undo what was done in reverse. Everything here works on one netlink socket
//! inside one pinned namespace, under that namespace's apply lock.

pub mod interrupt;
pub mod lock;
pub mod plan;
pub mod wanted;

use crate::error::{Error, Result};
use crate::netlink::{DumpEnd, NetlinkSocket, Request};
use crate::route::identity::{resendable, RouteKey};
use crate::route::message::{Route, AF_INET, AF_INET6, RTM_F_CLONED};
use crate::route::request::{RTM_DELROUTE, RTM_NEWROUTE};
use plan::{Found, Plan, Step};
use wanted::{hash_key, WantedRoutes};

const RTM_GETROUTE: u16 = 26;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const DUMP_ATTEMPTS: usize = 5;

/// The routes of the table that apply may touch: ours (protocol `owner`) and whatever sits
/// at a wanted key (`key_hashes`: `WantedRoutes::key_hashes`; a hash that only collides
/// keeps a route the plan then ignores). Everything else is never looked at again, so
/// memory follows the declared set and our own routes, not the table.
pub fn snapshot(sock: &mut NetlinkSocket, key_hashes: &[u64], owner: u8) -> Result<Vec<Found>> {
    'attempt: for _ in 0..DUMP_ATTEMPTS {
        let mut found = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let mut request = vec![0u8; 12];
            request[0] = family;
            let end = sock.dump(RTM_GETROUTE, &request, "reading the routing table", |msg| {
                if msg.kind != RTM_NEWROUTE {
                    return Ok(());
                }
                let route = Route::parse(msg.payload).map_err(|e| {
                    Error::Other(format!(
                        "the kernel sent a route machnet cannot decode ({}); nothing was changed",
                        e.0
                    ))
                })?;
                if route.flags & RTM_F_CLONED != 0 {
                    return Ok(());
                }
                let key = RouteKey::of(&route);
                if route.protocol == owner || key_hashes.binary_search(&hash_key(&key)).is_ok() {
                    found.push(Found {
                        message: msg.payload.to_vec(),
                        key,
                        protocol: route.protocol,
                    });
                }
                Ok(())
            })?;
            if end == DumpEnd::Interrupted {
                continue 'attempt;
            }
        }
        return Ok(found);
    }
    Err(Error::InconsistentDump(format!(
        "the routing table kept changing while machnet read it ({DUMP_ATTEMPTS} dumps in a row \
         were interrupted); nothing was changed, try again"
    )))
}

/// A step that failed: which one, and the kernel's refusal.
#[derive(Debug)]
pub struct Refused {
    /// The step the kernel refused; None when the socket itself failed, not a step.
    pub step: Option<Step>,
    pub error: Error,
    /// Other steps the kernel refused in the same batch (they are undone all the same).
    pub also_refused: usize,
    /// Steps whose outcome is unknown: sent, or about to be, when the socket failed.
    pub unanswered: usize,
    /// How the undo of every step known to be done went.
    pub undo: Undid,
}

/// Runs `plan` with as few round trips as the socket allows. On a refusal, every step that
/// succeeded (before it, or after it in the same batch) is undone in reverse order, and
/// the refusal is returned. `progress(done, total)` hears about each answered step.
/// `stopped()` is asked between datagrams: a signal it names stops the plan there, and is
/// undone like a refusal (the error is then [`Error::Interrupted`]).
pub fn execute(
    sock: &mut NetlinkSocket,
    plan: &Plan,
    wanted: &WantedRoutes,
    found: &[Found],
    what: &str,
    mut progress: impl FnMut(usize, usize),
    stopped: impl Fn() -> Option<i32>,
) -> std::result::Result<(), Box<Refused>> {
    let resent: Vec<Option<Vec<u8>>> = found_messages_to_resend(plan, found);
    let total = plan.steps.len();
    let mut done = vec![false; total];
    let mut refusals: Vec<(usize, Error)> = Vec::new();
    let mut answered = 0;
    let request = |i: usize| forward(plan.steps[i], wanted, &resent);
    let sent = sock.request_many(
        total,
        request,
        what,
        |i, outcome| {
            match outcome {
                None => done[i] = true,
                Some(error) => refusals.push((i, error)),
            }
            answered += 1;
            progress(answered, total);
        },
        || stopped().is_some(),
    );
    let (first, error, unanswered) = match sent {
        Ok(n) if n < total && refusals.is_empty() => {
            let signal = stopped().unwrap_or(0);
            let error = Error::Interrupted {
                signal,
                message: format!(
                    "stopped by {} after {n} of {total} steps",
                    interrupt::signal_name(signal)
                ),
            };
            (None, error, 0)
        }
        Ok(_) if refusals.is_empty() => return Ok(()),
        Ok(_) => {
            let (i, e) = refusals.remove(0);
            (Some(i), e, 0)
        }
        // The socket itself failed: what the kernel did with the unanswered requests is
        // unknown (said so in the report); undo what is known to be done.
        Err(e) => (None, e, total - answered),
    };
    let succeeded: Vec<Step> = plan
        .steps
        .iter()
        .zip(&done)
        .filter(|(_, ok)| **ok)
        .map(|(step, _)| *step)
        .collect();
    drop(done);
    let undid = undo(sock, &succeeded, wanted, &resent, what);
    Err(Box::new(Refused {
        step: first.map(|i| plan.steps[i]),
        error,
        also_refused: refusals.len(),
        unanswered,
        undo: undid,
    }))
}

/// The resendable form of each found route a step replaces or deletes (only those).
fn found_messages_to_resend(plan: &Plan, found: &[Found]) -> Vec<Option<Vec<u8>>> {
    let mut resent = vec![None; found.len()];
    for step in &plan.steps {
        if let Step::Replace { old: f, .. } | Step::Delete(f) = *step {
            resent[f as usize] = Some(resendable(&found[f as usize].message));
        }
    }
    resent
}

fn forward<'a>(step: Step, wanted: &'a WantedRoutes, resent: &'a [Option<Vec<u8>>]) -> Request<'a> {
    match step {
        Step::Add(w) => Request {
            kind: RTM_NEWROUTE,
            flags: NLM_F_CREATE | NLM_F_EXCL,
            payload: wanted.request(w as usize),
        },
        Step::Replace { new, .. } => Request {
            kind: RTM_NEWROUTE,
            flags: NLM_F_CREATE | NLM_F_REPLACE,
            payload: wanted.request(new as usize),
        },
        Step::Delete(f) => Request {
            kind: RTM_DELROUTE,
            flags: 0,
            payload: resent[f as usize]
                .as_deref()
                .expect("prepared for every delete"),
        },
    }
}

/// The request that reverses a step that was done.
fn backward<'a>(
    step: Step,
    wanted: &'a WantedRoutes,
    resent: &'a [Option<Vec<u8>>],
) -> Request<'a> {
    match step {
        // Deleting exactly what was added: the request names every field it set.
        Step::Add(w) => Request {
            kind: RTM_DELROUTE,
            flags: 0,
            payload: wanted.request(w as usize),
        },
        Step::Replace { old, .. } => Request {
            kind: RTM_NEWROUTE,
            flags: NLM_F_CREATE | NLM_F_REPLACE,
            payload: resent[old as usize]
                .as_deref()
                .expect("prepared for every replace"),
        },
        Step::Delete(f) => {
            let payload = resent[f as usize]
                .as_deref()
                .expect("prepared for every delete");
            // IPv4 may hold several routes at one key, put back in their order; IPv6 may not.
            let again = if payload[0] == AF_INET {
                NLM_F_APPEND
            } else {
                NLM_F_EXCL
            };
            Request {
                kind: RTM_NEWROUTE,
                flags: NLM_F_CREATE | again,
                payload,
            }
        }
    }
}

/// How an undo went.
#[derive(Debug)]
pub struct Undid {
    /// Steps put back.
    pub undone: usize,
    /// The refusals of those that could not be.
    pub failures: Vec<(Step, Error)>,
    /// The socket failed: how many steps were then left not undone, and why.
    pub cut_short: Option<(usize, Error)>,
}

/// Undoes `done` (in the order it was done), going on past a failed undo so as much as
/// possible is put back. Only a failing socket stops it: the steps then left are counted,
/// not guessed at.
///
/// Deleted routes go back first, in the order they were deleted (table order: the plan's
/// deletes are its tail), each appended at its key: IPv4 keeps several routes at one key in
/// order, and putting back [a, b, c]'s deleted b and c in reverse would leave [a, c, b].
/// Then adds and replaces are undone in reverse.
fn undo(
    sock: &mut NetlinkSocket,
    done: &[Step],
    wanted: &WantedRoutes,
    resent: &[Option<Vec<u8>>],
    what: &str,
) -> Undid {
    let is_delete = |s: &&Step| matches!(s, Step::Delete(_));
    let order: Vec<Step> = (done.iter().filter(is_delete))
        .chain(done.iter().rev().filter(|s| !is_delete(s)))
        .copied()
        .collect();
    let step = |i: usize| order[i];
    let mut undid = Undid {
        undone: 0,
        failures: Vec::new(),
        cut_short: None,
    };
    let mut start = 0;
    while start < done.len() {
        let mut answered = 0;
        let request = |i: usize| backward(step(start + i), wanted, resent);
        // Never stopped: a signal that comes now waits for the table to be whole again.
        let outcome = sock.request_many(
            done.len() - start,
            request,
            what,
            |i, refusal| {
                answered += 1;
                match refusal {
                    None => undid.undone += 1,
                    Some(e) => undid.failures.push((step(start + i), e)),
                }
            },
            || false,
        );
        match outcome {
            Ok(sent) => start += sent,
            Err(e) => {
                undid.cut_short = Some((done.len() - start - answered, e));
                break;
            }
        }
    }
    undid
}
