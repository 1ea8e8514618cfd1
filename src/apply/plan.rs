//! Wanted routes against a table: what to add, replace and delete. Plain values in, plain
//! values out, so every rule is unit-tested without a kernel.
//!
//! The rules (issue 4, DESIGN.md "Owning what we change"):
//! - a wanted route with no route at its key is added;
//! - one whose key holds exactly that route already is left alone;
//! - one whose key holds a route of ours (the owner protocol) that differs is replaced;
//! - one whose key holds a foreign route (any other protocol) is a conflict naming both,
//!   unless adopting, when it is replaced (and becomes ours);
//! - our routes at keys nobody declared are deleted. Foreign ones never are.

use super::wanted::{hash_key, WantedRoutes};
use crate::route::identity::{is_same_route, KeyMap, RouteKey};
use crate::route::message::Route;

/// A route found in the table that apply may have to touch (ours, or at a wanted key).
#[derive(Debug, Clone)]
pub struct Found {
    pub message: Vec<u8>,
    pub key: RouteKey,
    pub protocol: u8,
}

impl Found {
    /// `message` must have passed Route::parse.
    pub fn new(message: Vec<u8>) -> Found {
        let route = parse(&message);
        let (key, protocol) = (RouteKey::of(&route), route.protocol);
        Found {
            message,
            key,
            protocol,
        }
    }
}

/// One change, by position in the wanted routes and the found ones. u32, not usize: a
/// million-route plan is 12 MB of steps, not 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add wanted route `i`.
    Add(u32),
    /// Overwrite `found[old]` with wanted route `new`.
    Replace { new: u32, old: u32 },
    /// Delete `found[i]`.
    Delete(u32),
}

fn at(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 4 billion routes")
}

/// Why the wanted set cannot be applied as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Wanted route `wanted` has the key of a foreign route `found[found]`.
    Foreign { wanted: usize, found: usize },
    /// Two declared routes have one key: the second would overwrite the first.
    SameKey { first: usize, second: usize },
}

#[derive(Debug, Default)]
pub struct Plan {
    /// In the order they run: adds and replaces in declared order, then deletes (the new
    /// route is in place before the old one goes).
    pub steps: Vec<Step>,
    /// Wanted routes already in place.
    pub in_sync: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// (added, replaced, deleted)
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for step in &self.steps {
            match step {
                Step::Add(_) => counts.0 += 1,
                Step::Replace { .. } => counts.1 += 1,
                Step::Delete(_) => counts.2 += 1,
            }
        }
        counts
    }
}

fn parse(bytes: &[u8]) -> Route<'_> {
    Route::parse(bytes).expect("routes are validated when collected")
}

/// Plans `wanted` against `found` (routes that are ours, or at a wanted key; everything
/// else in the table is irrelevant). `owner` is the protocol number that marks ours.
/// `key_hashes` is `wanted.key_hashes()`; it is dropped once duplicates are known, before
/// the steps are built, as it is the largest thing here after the routes themselves.
pub fn plan(
    wanted: &WantedRoutes,
    key_hashes: Vec<u64>,
    found: &[Found],
    owner: u8,
    adopt: bool,
) -> Result<Plan, Vec<Conflict>> {
    let mut conflicts = same_keys(wanted, key_hashes);
    let repeated: Vec<usize> = conflicts
        .iter()
        .filter_map(|c| match c {
            Conflict::SameKey { second, .. } => Some(*second),
            Conflict::Foreign { .. } => None,
        })
        .collect();
    let found_at = FoundByKey::new(found);
    let mut here = Vec::new();
    // Found routes at a declared key: only the others of ours are deleted.
    let mut declared = vec![false; found.len()];
    let mut plan = Plan::default();
    let mut deletes = Vec::new();
    for w in 0..wanted.len() {
        if repeated.binary_search(&w).is_ok() {
            continue;
        }
        found_at.get(&wanted.key(w), &mut here);
        if here.is_empty() {
            plan.steps.push(Step::Add(at(w)));
            continue;
        }
        for &f in &here {
            declared[f] = true;
        }
        if let [only] = here[..] {
            if is_same_route(&wanted.route(w), &parse(&found[only].message)) {
                plan.in_sync += 1;
                continue;
            }
        }
        let foreign = here.iter().find(|&&f| found[f].protocol != owner);
        match foreign {
            Some(&f) if !adopt => conflicts.push(Conflict::Foreign {
                wanted: w,
                found: f,
            }),
            _ => {
                // IPv4 can hold several routes at one key (`ip route append`): the first is
                // overwritten, the others go.
                plan.steps.push(Step::Replace {
                    new: at(w),
                    old: at(here[0]),
                });
                deletes.extend(here[1..].iter().copied());
            }
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort_by_key(|c| match *c {
            Conflict::SameKey { second, .. } => second,
            Conflict::Foreign { wanted, .. } => wanted,
        });
        return Err(conflicts);
    }
    deletes.extend((0..found.len()).filter(|&f| !declared[f] && found[f].protocol == owner));
    // Stable output: deletes in table order.
    deletes.sort_unstable();
    plan.steps
        .extend(deletes.into_iter().map(|f| Step::Delete(at(f))));
    Ok(plan)
}

/// Found routes by key: the first at each key, and each one's next at the same key. A
/// chain rather than a Vec per key: re-applying 100,000 routes made 100,000 small Vecs,
/// a tenth of its time in malloc and free.
struct FoundByKey {
    first: KeyMap<u32>,
    next: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl FoundByKey {
    fn new(found: &[Found]) -> FoundByKey {
        let mut first: KeyMap<u32> = KeyMap::default();
        first.reserve(found.len());
        let mut next = vec![NONE; found.len()];
        // Backwards, so each chain runs in table order.
        for (i, f) in found.iter().enumerate().rev() {
            if let Some(later) = first.insert(f.key, at(i)) {
                next[i] = later;
            }
        }
        FoundByKey { first, next }
    }

    /// The found routes at `key`, in table order, into `here` (emptied first).
    fn get(&self, key: &RouteKey, here: &mut Vec<usize>) {
        here.clear();
        let mut at = self.first.get(key).copied().unwrap_or(NONE);
        while at != NONE {
            here.push(at as usize);
            at = self.next[at as usize];
        }
    }
}

/// Declared routes that share a key with an earlier one (ascending by the later one).
/// Equal hashes only make suspects; their keys are compared in full.
fn same_keys(wanted: &WantedRoutes, mut key_hashes: Vec<u64>) -> Vec<Conflict> {
    let mut suspects: Vec<u64> = key_hashes
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect();
    key_hashes.clear();
    key_hashes.shrink_to_fit();
    if suspects.is_empty() {
        return Vec::new();
    }
    suspects.dedup();
    let mut first_at: KeyMap<usize> = KeyMap::default();
    let mut conflicts = Vec::new();
    for w in 0..wanted.len() {
        let key = wanted.key(w);
        if suspects.binary_search(&hash_key(&key)).is_err() {
            continue;
        }
        if let Some(&first) = first_at.get(&key) {
            conflicts.push(Conflict::SameKey { first, second: w });
        } else {
            first_at.insert(key, w);
        }
    }
    conflicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::attr;
    use crate::route::message::{RTA_DST, RTA_GATEWAY, RTA_PRIORITY};

    const OURS: u8 = 109;
    const STATIC: u8 = 4;

    fn msg(dst: [u8; 4], gw: [u8; 4], metric: u32, protocol: u8) -> Vec<u8> {
        let mut m = vec![2, 24, 0, 0, 254, protocol, 0, 1, 0, 0, 0, 0];
        attr::push(&mut m, RTA_DST, &dst);
        attr::push(&mut m, RTA_GATEWAY, &gw);
        attr::push(&mut m, RTA_PRIORITY, &metric.to_ne_bytes());
        m
    }

    fn wanted(list: &[Vec<u8>]) -> WantedRoutes {
        let mut wanted = WantedRoutes::default();
        for request in list {
            wanted.push_request(request);
        }
        wanted
    }

    fn plan(w: &WantedRoutes, f: &[Found], owner: u8, adopt: bool) -> Result<Plan, Vec<Conflict>> {
        super::plan(w, w.key_hashes(), f, owner, adopt)
    }

    fn found(list: &[Vec<u8>]) -> Vec<Found> {
        list.iter().map(|m| Found::new(m.clone())).collect()
    }

    #[test]
    fn adds_replaces_keeps_and_deletes() {
        let w = wanted(&[
            msg([10, 1, 0, 0], [10, 0, 0, 1], 0, OURS), // in place
            msg([10, 2, 0, 0], [10, 0, 0, 1], 0, OURS), // differs: replace
            msg([10, 3, 0, 0], [10, 0, 0, 1], 0, OURS), // missing: add
        ]);
        let f = found(&[
            msg([10, 1, 0, 0], [10, 0, 0, 1], 0, OURS),
            msg([10, 2, 0, 0], [10, 0, 0, 9], 0, OURS),
            msg([10, 4, 0, 0], [10, 0, 0, 1], 0, OURS), // ours, undeclared: delete
        ]);
        let plan = plan(&w, &f, OURS, false).unwrap();
        assert_eq!(
            plan.steps,
            vec![
                Step::Replace { new: 1, old: 1 },
                Step::Add(2),
                Step::Delete(2)
            ]
        );
        assert_eq!(plan.in_sync, 1);
    }

    #[test]
    fn foreign_routes_are_never_deleted_and_collide_unless_adopted() {
        let w = wanted(&[msg([10, 9, 0, 0], [10, 0, 0, 1], 0, OURS)]);
        let f = found(&[
            msg([10, 9, 0, 0], [10, 0, 0, 2], 0, STATIC),
            msg([10, 8, 0, 0], [10, 0, 0, 2], 0, STATIC),
        ]);
        assert_eq!(
            plan(&w, &f, OURS, false).unwrap_err(),
            vec![Conflict::Foreign {
                wanted: 0,
                found: 0
            }]
        );
        let adopted = plan(&w, &f, OURS, true).unwrap();
        assert_eq!(adopted.steps, vec![Step::Replace { new: 0, old: 0 }]);
    }

    #[test]
    fn another_metric_is_another_key() {
        let w = wanted(&[msg([10, 9, 0, 0], [10, 0, 0, 1], 100, OURS)]);
        let f = found(&[msg([10, 9, 0, 0], [10, 0, 0, 2], 0, STATIC)]);
        assert_eq!(plan(&w, &f, OURS, false).unwrap().steps, vec![Step::Add(0)]);
    }

    #[test]
    fn a_foreign_route_declared_exactly_is_in_sync() {
        let w = wanted(&[msg([10, 9, 0, 0], [10, 0, 0, 1], 0, STATIC)]);
        let f = found(&[msg([10, 9, 0, 0], [10, 0, 0, 1], 0, STATIC)]);
        let plan = plan(&w, &f, OURS, false).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.in_sync, 1);
    }

    #[test]
    fn two_declarations_of_one_key_are_refused() {
        let w = wanted(&[
            msg([10, 9, 0, 0], [10, 0, 0, 1], 0, OURS),
            msg([10, 9, 0, 0], [10, 0, 0, 2], 0, OURS),
        ]);
        assert_eq!(
            plan(&w, &[], OURS, false).unwrap_err(),
            vec![Conflict::SameKey {
                first: 0,
                second: 1
            }]
        );
    }

    #[test]
    fn every_repeat_of_a_key_is_named_with_its_first() {
        let w = wanted(&[
            msg([10, 9, 0, 0], [10, 0, 0, 1], 0, OURS),
            msg([10, 8, 0, 0], [10, 0, 0, 1], 0, OURS),
            msg([10, 9, 0, 0], [10, 0, 0, 2], 0, OURS),
            msg([10, 9, 0, 0], [10, 0, 0, 3], 0, OURS),
            msg([10, 8, 0, 0], [10, 0, 0, 1], 7, OURS),
        ]);
        assert_eq!(
            plan(&w, &[], OURS, false).unwrap_err(),
            vec![
                Conflict::SameKey {
                    first: 0,
                    second: 2
                },
                Conflict::SameKey {
                    first: 0,
                    second: 3
                }
            ]
        );
    }

    #[test]
    fn extra_routes_at_one_key_are_deleted() {
        let w = wanted(&[msg([10, 9, 0, 0], [10, 0, 0, 1], 0, OURS)]);
        let f = found(&[
            msg([10, 9, 0, 0], [10, 0, 0, 3], 0, OURS),
            msg([10, 9, 0, 0], [10, 0, 0, 4], 0, OURS),
        ]);
        assert_eq!(
            plan(&w, &f, OURS, false).unwrap().steps,
            vec![Step::Replace { new: 0, old: 0 }, Step::Delete(1)]
        );
    }
}
