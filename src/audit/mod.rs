//! `machnet audit`: rules over a [`Survey`](crate::survey::Survey), each finding with a
//! rule id, a severity, the machine, what is wrong and a one-line fix.
//!
//! Rules are plain functions of the survey (rules.rs), so each is unit-tested on a
//! hand-made survey; the integration tests make every fault for real on the testbed.

pub mod output;
pub mod rules;

use serde::Serialize;

use crate::survey::Survey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    /// The machine, or `.host` for a finding about the host itself.
    pub machine: String,
    /// What inside the machine the finding is about (an interface, a route, an address),
    /// so two findings of one rule on one machine stay apart.
    pub subject: String,
    pub message: String,
    pub fix: String,
}

/// A rule: its id, what it checks (for --help and docs), and the check.
pub struct Rule {
    pub id: &'static str,
    pub about: &'static str,
    pub check: fn(&Survey) -> Vec<Finding>,
}

/// Every rule, in the order `--list-rules` shows them. `route-drift` is not here: it needs
/// an apply file and runs only with --expect (commands/audit.rs).
pub const RULES: &[Rule] = &[
    Rule {
        id: "lo-down",
        about: "loopback down inside a machine (its services unreachable on 127.0.0.1)",
        check: rules::lo_down,
    },
    Rule {
        id: "no-default-route",
        about: "a machine with addresses but no default route",
        check: rules::no_default_route,
    },
    Rule {
        id: "link-local-only",
        about: "a machine with only link-local addresses and no default route (DHCP failed)",
        check: rules::link_local_only,
    },
    Rule {
        id: "gateway-unreachable",
        about: "a route's gateway is on no connected subnet and the route is not onlink",
        check: rules::gateway_unreachable,
    },
    Rule {
        id: "route-via-down-link",
        about: "a route leaves through a link that is down or has no carrier",
        check: rules::route_via_down_link,
    },
    Rule {
        id: "shares-host-netns",
        about: "a machine with no network isolation (it uses the host's namespace)",
        check: rules::shares_host_netns,
    },
    Rule {
        id: "stale-machine",
        about: "machined lists a machine whose leader is gone",
        check: rules::stale_machine,
    },
    Rule {
        id: "unreadable-machine",
        about: "a machine machnet could not read (its other rules were not checked)",
        check: rules::unreadable_machine,
    },
    Rule {
        id: "veth-peer-down",
        about: "the host end of a machine's veth is down",
        check: rules::veth_peer_down,
    },
    Rule {
        id: "veth-peer-missing",
        about: "the host end of a machine's veth is gone, or not on the bridge its siblings use",
        check: rules::veth_peer_missing,
    },
    Rule {
        id: "host-forwarding-off",
        about: "machines route through the host but the host does not forward",
        check: rules::host_forwarding_off,
    },
    Rule {
        id: "nat-missing",
        about: "machines with private addresses reach beyond the host with no masquerade",
        check: rules::nat_missing,
    },
    Rule {
        id: "mtu-mismatch",
        about: "a veth whose two ends have different MTUs (large packets dropped)",
        check: rules::mtu_mismatch,
    },
    Rule {
        id: "wildcard-matches-nothing",
        about: "an nft rule matching an iptables-style `ve-+` name, which nft takes literally",
        check: rules::wildcard_matches_nothing,
    },
    Rule {
        id: "forward-dropped",
        about: "the host's forward chain drops a machine's outbound traffic",
        check: rules::forward_dropped,
    },
    Rule {
        id: "nat66-missing",
        about: "a unique-local IPv6 address routed out through the host with no masquerade",
        check: rules::nat66_missing,
    },
    Rule {
        id: "loopback-nameserver",
        about: "a machine whose resolv.conf names a loopback nameserver nothing listens on",
        check: rules::loopback_nameserver,
    },
    Rule {
        id: "duplicate-address",
        about: "one address in two network namespaces",
        check: rules::duplicate_address,
    },
    Rule {
        id: "overlapping-subnet",
        about: "machines on different links with overlapping subnets",
        check: rules::overlapping_subnet,
    },
];

/// The id of the rule that compares routes with an apply file (--expect).
pub const ROUTE_DRIFT: &str = "route-drift";

/// Runs the selected rules and sorts the findings: worst first, then by machine, rule and
/// subject, so two runs over the same state print the same lines.
pub fn run(survey: &Survey, selected: &[&str]) -> Vec<Finding> {
    let mut findings: Vec<Finding> = RULES
        .iter()
        .filter(|r| selected.contains(&r.id))
        .flat_map(|r| (r.check)(survey))
        .collect();
    sort(&mut findings);
    findings
}

pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.machine.cmp(&b.machine))
            .then_with(|| a.rule.cmp(b.rule))
            .then_with(|| a.subject.cmp(&b.subject))
            .then_with(|| a.message.cmp(&b.message))
    });
}

/// Every rule id, route-drift included.
pub fn rule_ids() -> Vec<&'static str> {
    RULES
        .iter()
        .map(|r| r.id)
        .chain(std::iter::once(ROUTE_DRIFT))
        .collect()
}
