//! What the nftables ruleset (`nft -j list ruleset`; iptables-nft rules live there too)
//! does to one packet: the filter verdict of the base chains on a hook, and whether a
//! postrouting NAT rule masquerades it.
//!
//! The evaluator judges only matches it can read exactly: interface names (with nft's
//! `*` wildcard), addresses and prefixes, anonymous sets, the L4 protocol, ports and the
//! conntrack state. Anything else (named sets, maps, marks, ct helpers, xt compat
//! matches, limits, ...) makes the rule "unknown": a rule that might decide the packet is
//! reported as such, never guessed.

use std::net::IpAddr;

use serde_json::Value;

/// The packet asked about, as the host's forward or postrouting hook sees it.
#[derive(Debug, Clone)]
pub struct Packet {
    pub iifname: String,
    pub oifname: String,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// IPPROTO_* (6 tcp, 17 udp, 1 icmp, 58 icmpv6).
    pub l4proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// "new" for the first packet of a flow, "established" for a reply.
    pub ct_state: &'static str,
    /// Whether the destination is an address of the host (`fib daddr type local`).
    pub daddr_is_local: bool,
}

/// The source port the packets asked about come from: any ephemeral one, for rules
/// that match on it.
pub const EPHEMERAL_PORT: u16 = 40000;

impl Packet {
    /// The first packet of a flow (ct state new) from an ephemeral port.
    pub fn new_flow(
        iifname: &str,
        oifname: &str,
        saddr: IpAddr,
        daddr: IpAddr,
        l4proto: u8,
        dport: Option<u16>,
    ) -> Packet {
        Packet {
            iifname: iifname.to_string(),
            oifname: oifname.to_string(),
            saddr,
            daddr,
            l4proto,
            sport: Some(EPHEMERAL_PORT),
            dport,
            ct_state: "new",
            daddr_is_local: false,
        }
    }

    /// The flow's reply: the other way through the same devices, ct state established.
    pub fn reply(&self) -> Packet {
        Packet {
            iifname: self.oifname.clone(),
            oifname: self.iifname.clone(),
            saddr: self.daddr,
            daddr: self.saddr,
            l4proto: self.l4proto,
            sport: self.dport,
            dport: self.sport,
            ct_state: "established",
            daddr_is_local: false,
        }
    }
}

/// Where a rule sits, and its text as `nft -a list ruleset` prints it (when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// None for a chain's policy.
    pub handle: Option<u64>,
    pub text: String,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.handle {
            Some(h) => write!(
                f,
                "table {} {} chain {} handle {h}: {}",
                self.family, self.table, self.chain, self.text
            ),
            None => write!(
                f,
                "table {} {} chain {}: {}",
                self.family, self.table, self.chain, self.text
            ),
        }
    }
}

/// The filter verdict for a packet on one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// No base chain on the hook (nothing filters).
    NoChains,
    /// Accepted: by this rule or policy (the last base chain that decided).
    Accepted(RuleRef),
    /// Dropped or rejected by this rule or policy.
    Dropped(RuleRef),
    /// A rule that might decide cannot be judged.
    Unknown(RuleRef, String),
}

/// Whether source NAT covers the packet on postrouting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nat {
    Masqueraded(RuleRef),
    NotCovered,
    Unknown(RuleRef, String),
}

/// Whether destination NAT rewrites the packet on a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dnat {
    /// To this address (and port, when the rule names one).
    To(RuleRef, IpAddr, Option<u16>),
    NotCovered,
    Unknown(RuleRef, String),
}

/// A ruleset read once, asked many questions.
#[derive(Debug, Default)]
pub struct Ruleset {
    items: Vec<Value>,
    /// (family, table, chain, handle) -> rule text, from `nft -a list ruleset`.
    texts: Vec<((String, String, String, u64), String)>,
}

/// One match's answer.
#[derive(Debug, PartialEq, Eq)]
enum Truth {
    Yes,
    No,
    Unknown(String),
}

/// A rule as one packet meets it (Ruleset::met).
enum Met<'a> {
    /// The packet matches it: its statements run.
    Applies(RuleRef, &'a [Value]),
    /// It may decide the packet, and its matches cannot be judged.
    MayDecide(RuleRef, String),
}

/// A nat chain's outcome for the packet.
enum NatOutcome {
    Decided(Nat),
    /// accept, drop, or the end of a goto'd chain: no NAT in this base chain.
    Stopped,
    FallThrough,
}

/// A chain's outcome for the packet.
enum Outcome {
    Accept(RuleRef),
    Drop(RuleRef),
    /// Ran off the end, or `return`.
    FallThrough,
    Unknown(RuleRef, String),
}

/// `nft ARGS` on the host (None: machnet's own namespace) or in a namespace: its stdout,
/// or what went wrong in nft's words.
pub fn run_nft(
    args: &[&str],
    namespace: Option<&crate::netns::PinnedNamespace>,
) -> Result<Vec<u8>, String> {
    let output = match namespace {
        Some(ns) => ns.output("nft", args).map_err(|e| e.to_string()),
        None => std::process::Command::new("nft")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("nft: {e}")),
    }?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!(
            "nft says: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// What `nft -j` printed, as JSON; an empty ruleset prints nothing at all.
pub fn parse_json(printed: &[u8]) -> Result<Value, String> {
    if printed.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({ "nftables": [] }));
    }
    serde_json::from_slice(printed)
        .map_err(|e| format!("nft -j printed what machnet cannot read: {e}"))
}

impl Ruleset {
    /// The ruleset of the host (None) or of a namespace: JSON to judge, `-a` text to quote.
    pub fn read(namespace: Option<&crate::netns::PinnedNamespace>) -> Result<Ruleset, String> {
        let read = |args: &[&str]| {
            run_nft(args, namespace).map_err(|e| format!("firewall was not read: {e}"))
        };
        let json = parse_json(&read(&["-j", "list", "ruleset"])?)?;
        let text = read(&["-a", "list", "ruleset"])?;
        Ok(Ruleset::parse(&json, &String::from_utf8_lossy(&text)))
    }

    /// `json` is `nft -j list ruleset`; `text` is `nft -a list ruleset` (for quoting rules;
    /// may be empty).
    pub fn parse(json: &Value, text: &str) -> Ruleset {
        let items = json
            .get("nftables")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ruleset {
            items,
            texts: rule_texts(text),
        }
    }

    /// The filter verdict of every `type filter` base chain on `hook` ("forward",
    /// "output", "input") that sees the packet's family, in priority order.
    pub fn filter(&self, hook: &str, packet: &Packet) -> Filter {
        let mut decided = None;
        for chain in self.base_chains("filter", hook, packet.saddr) {
            match self.run_chain(&chain, packet, 0) {
                Outcome::Accept(rule) => decided = Some(rule),
                Outcome::Drop(rule) => return Filter::Dropped(rule),
                Outcome::Unknown(rule, why) => return Filter::Unknown(rule, why),
                Outcome::FallThrough => {
                    let policy = chain.policy.clone();
                    let rule = self.policy_ref(&chain);
                    if policy == "drop" {
                        return Filter::Dropped(rule);
                    }
                    decided = Some(rule);
                }
            }
        }
        decided.map_or(Filter::NoChains, Filter::Accepted)
    }

    /// Whether a `type nat` postrouting chain masquerades (or SNATs) the packet.
    pub fn source_nat(&self, packet: &Packet) -> Nat {
        for chain in self.base_chains("nat", "postrouting", packet.saddr) {
            if let NatOutcome::Decided(found) = self.find_nat(&chain.name, &chain, packet, 0) {
                return found;
            }
        }
        Nat::NotCovered
    }

    /// The source prefixes its masquerade/snat rules cover (crate::nat, for audit).
    pub fn masquerades(&self) -> Vec<crate::survey::Masquerade> {
        crate::nat::masquerades(&self.items)
    }

    /// Rules that match an interface name ending in `+`: iptables' wildcard, which nft
    /// takes as a plain character (its wildcard is `*`). With the name as written.
    pub fn plus_wildcards(&self) -> Vec<(RuleRef, String)> {
        let mut out = Vec::new();
        for rule in self.items.iter().filter_map(|i| i.get("rule")) {
            let Some(exprs) = rule.get("expr").and_then(Value::as_array) else {
                continue;
            };
            for m in exprs.iter().filter_map(|e| e.get("match")) {
                let key = m
                    .get("left")
                    .and_then(|l| l.get("meta"))
                    .and_then(|m| m.get("key"));
                if !matches!(key.and_then(Value::as_str), Some("iifname" | "oifname")) {
                    continue;
                }
                let names: Vec<&str> = match m.get("right") {
                    Some(Value::String(s)) => vec![s.as_str()],
                    Some(Value::Object(o)) => o
                        .get("set")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                for name in names.into_iter().filter(|n| n.ends_with('+')) {
                    out.push((self.rule_ref(rule), name.to_string()));
                }
            }
        }
        out
    }

    /// Rules that concern a machine: they match one of `names` (its host-side links, by
    /// name or nft wildcard), an address or prefix holding one of `addrs`, or DNAT to one
    /// of them. With why, in a few words.
    pub fn rules_concerning(&self, names: &[String], addrs: &[IpAddr]) -> Vec<(RuleRef, String)> {
        let mut out = Vec::new();
        for rule in self.items.iter().filter_map(|i| i.get("rule")) {
            let Some(exprs) = rule.get("expr").and_then(Value::as_array) else {
                continue;
            };
            let mut why = Vec::new();
            for e in exprs {
                if let Some(m) = e.get("match") {
                    let left = m.get("left").unwrap_or(&Value::Null);
                    let right = m.get("right").unwrap_or(&Value::Null);
                    let key = left
                        .get("meta")
                        .and_then(|m| m.get("key"))
                        .and_then(Value::as_str);
                    if matches!(key, Some("iifname" | "oifname")) {
                        for name in names {
                            if contains(right, &Field::Name(name.clone())) == Ok(true) {
                                why.push(format!("matches {name}"));
                            }
                        }
                    }
                    if left.get("payload").is_some_and(|p| {
                        matches!(
                            p.get("field").and_then(Value::as_str),
                            Some("saddr" | "daddr")
                        )
                    }) {
                        for addr in addrs {
                            if contains(right, &Field::Addr(*addr)) == Ok(true) {
                                why.push(format!("covers {addr}"));
                            }
                        }
                    }
                }
                if let Some(to) = e
                    .get("dnat")
                    .and_then(|d| d.get("addr"))
                    .and_then(Value::as_str)
                {
                    if addrs.iter().any(|a| a.to_string() == to) {
                        why.push(format!("forwards to {to}"));
                    }
                }
            }
            if !why.is_empty() {
                why.dedup();
                out.push((self.rule_ref(rule), why.join(", ")));
            }
        }
        out
    }

    /// Whether a `type nat` chain on `hook` ("prerouting", "output") DNATs the packet.
    pub fn destination_nat(&self, hook: &str, packet: &Packet) -> Dnat {
        for chain in self.base_chains("nat", hook, packet.daddr) {
            for met in self.met(&chain, &chain.name, packet) {
                let (reference, exprs) = match met {
                    Met::MayDecide(reference, why) => return Dnat::Unknown(reference, why),
                    Met::Applies(reference, exprs) => (reference, exprs),
                };
                let Some(dnat) = exprs.iter().find_map(|e| e.get("dnat")) else {
                    let ends = exprs.iter().any(|e| {
                        e.get("accept").is_some()
                            || e.get("return").is_some()
                            || e.get("drop").is_some()
                    });
                    if ends {
                        break; // the chain ends here for this packet, without DNAT
                    }
                    if may_decide(exprs) {
                        let why = "a rule before any dnat that may decide (a jump, a redirect, \
                                   a map) is not followed"
                            .to_string();
                        return Dnat::Unknown(reference, why);
                    }
                    continue;
                };
                let addr = dnat
                    .get("addr")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok());
                let port = match dnat.get("port") {
                    None => None,
                    Some(p) => match p.as_u64().and_then(|p| u16::try_from(p).ok()) {
                        Some(p) => Some(p),
                        None => {
                            let why = format!("a dnat to the port range {p}");
                            return Dnat::Unknown(reference, why);
                        }
                    },
                };
                return match addr {
                    Some(addr) => Dnat::To(reference, addr, port),
                    None => {
                        Dnat::Unknown(reference, "a dnat target that is not one address".into())
                    }
                };
            }
        }
        Dnat::NotCovered
    }

    /// A nat chain's outcome for the packet: NAT (or unknown), an end without NAT
    /// (accept, drop, the end of a goto'd chain), or falling through to the caller.
    fn find_nat(&self, name: &str, base: &Chain, packet: &Packet, depth: usize) -> NatOutcome {
        if depth > 16 {
            let why = "chains nest too deep".to_string();
            return NatOutcome::Decided(Nat::Unknown(self.policy_ref(base), why));
        }
        for met in self.met(base, name, packet) {
            let (reference, exprs) = match met {
                Met::MayDecide(reference, why) => {
                    return NatOutcome::Decided(Nat::Unknown(reference, why))
                }
                Met::Applies(reference, exprs) => (reference, exprs),
            };
            for e in exprs {
                if e.get("masquerade").is_some() || e.get("snat").is_some() {
                    return NatOutcome::Decided(Nat::Masqueraded(reference));
                }
                if let Some(target) = jump_target(e, "jump") {
                    match self.find_nat(target, base, packet, depth + 1) {
                        NatOutcome::FallThrough => {}
                        decided => return decided,
                    }
                }
                if let Some(target) = jump_target(e, "goto") {
                    return match self.find_nat(target, base, packet, depth + 1) {
                        // A goto'd chain's end is the end of this one too.
                        NatOutcome::FallThrough => NatOutcome::Stopped,
                        decided => decided,
                    };
                }
                if e.get("return").is_some() {
                    return NatOutcome::FallThrough;
                }
                if e.get("accept").is_some() || e.get("drop").is_some() {
                    return NatOutcome::Stopped;
                }
            }
        }
        NatOutcome::FallThrough
    }

    fn run_chain(&self, chain: &Chain, packet: &Packet, depth: usize) -> Outcome {
        self.run_named(&chain.name, chain, packet, depth)
    }

    fn run_named(&self, name: &str, base: &Chain, packet: &Packet, depth: usize) -> Outcome {
        if depth > 16 {
            return Outcome::Unknown(self.policy_ref(base), "chains nest too deep".into());
        }
        for met in self.met(base, name, packet) {
            let (reference, exprs) = match met {
                Met::MayDecide(reference, why) => return Outcome::Unknown(reference, why),
                Met::Applies(reference, exprs) => (reference, exprs),
            };
            for e in exprs {
                if e.get("accept").is_some() {
                    return Outcome::Accept(reference);
                }
                if e.get("drop").is_some() || e.get("reject").is_some() {
                    return Outcome::Drop(reference);
                }
                if e.get("return").is_some() {
                    return Outcome::FallThrough;
                }
                if let Some(target) = jump_target(e, "jump") {
                    match self.run_named(target, base, packet, depth + 1) {
                        Outcome::FallThrough => {}
                        decided => return decided,
                    }
                }
                if let Some(target) = jump_target(e, "goto") {
                    return self.run_named(target, base, packet, depth + 1);
                }
            }
        }
        Outcome::FallThrough
    }

    /// The rules of chain `name` (in `base`'s table) as the packet meets them, in order:
    /// those it matches, and those that may decide but whose matches cannot be judged.
    /// Rules it does not match, and unjudged ones that cannot decide, are left out.
    fn met<'a>(
        &'a self,
        base: &'a Chain,
        name: &'a str,
        packet: &'a Packet,
    ) -> impl Iterator<Item = Met<'a>> + 'a {
        self.rules(&base.family, &base.table, name)
            .filter_map(move |rule| {
                let reference = self.rule_ref(rule);
                let exprs = rule.get("expr").and_then(Value::as_array)?;
                match self.matches(exprs, &reference.text, packet) {
                    Truth::No => None,
                    Truth::Unknown(why) => {
                        may_decide(exprs).then_some(Met::MayDecide(reference, why))
                    }
                    Truth::Yes => Some(Met::Applies(reference, exprs)),
                }
            })
    }

    /// Every match of a rule, in order: the first No wins, then the first Unknown.
    /// `text` is the rule as nft prints it, for iptables-nft's compat matches.
    fn matches(&self, exprs: &[Value], text: &str, packet: &Packet) -> Truth {
        let mut unknown = None;
        for e in exprs {
            let truth = if let Some(m) = e.get("match") {
                judge_match(m, packet)
            } else if let Some(xt) = e.get("xt") {
                judge_xt(xt, text, packet)
            } else if is_harmless_statement(e) || is_nat_or_verdict(e) {
                Truth::Yes
            } else {
                let key = e
                    .as_object()
                    .and_then(|o| o.keys().next().cloned())
                    .unwrap_or_default();
                Truth::Unknown(format!("the statement `{key}` is not judged"))
            };
            match truth {
                Truth::No => return Truth::No,
                Truth::Unknown(why) => {
                    unknown.get_or_insert(why);
                }
                Truth::Yes => {}
            }
        }
        unknown.map_or(Truth::Yes, Truth::Unknown)
    }

    fn base_chains(&self, kind: &str, hook: &str, addr: IpAddr) -> Vec<Chain> {
        let family_applies = |family: &str| match family {
            "inet" => true,
            "ip" => addr.is_ipv4(),
            "ip6" => addr.is_ipv6(),
            _ => false,
        };
        let mut chains: Vec<Chain> = self
            .items
            .iter()
            .filter_map(|item| item.get("chain"))
            .filter(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("hook").and_then(Value::as_str) == Some(hook)
                    && family_applies(c.get("family").and_then(Value::as_str).unwrap_or(""))
            })
            .map(|c| Chain {
                family: str_of(c, "family"),
                table: str_of(c, "table"),
                name: str_of(c, "name"),
                prio: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                policy: c
                    .get("policy")
                    .and_then(Value::as_str)
                    .unwrap_or("accept")
                    .to_string(),
            })
            .collect();
        chains.sort_by_key(|c| c.prio);
        chains
    }

    fn rules<'a>(
        &'a self,
        family: &'a str,
        table: &'a str,
        chain: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.items
            .iter()
            .filter_map(|i| i.get("rule"))
            .filter(move |r| {
                r.get("family").and_then(Value::as_str) == Some(family)
                    && r.get("table").and_then(Value::as_str) == Some(table)
                    && r.get("chain").and_then(Value::as_str) == Some(chain)
            })
    }

    fn rule_ref(&self, rule: &Value) -> RuleRef {
        let (family, table, chain) = (
            str_of(rule, "family"),
            str_of(rule, "table"),
            str_of(rule, "chain"),
        );
        let handle = rule.get("handle").and_then(Value::as_u64);
        let text = handle
            .and_then(|h| {
                self.texts
                    .iter()
                    .find(|((f, t, c, hh), _)| {
                        *f == family && *t == table && *c == chain && *hh == h
                    })
                    .map(|(_, text)| text.clone())
            })
            .unwrap_or_else(|| "(rule text not available)".into());
        RuleRef {
            family,
            table,
            chain,
            handle,
            text,
        }
    }

    fn policy_ref(&self, chain: &Chain) -> RuleRef {
        RuleRef {
            family: chain.family.clone(),
            table: chain.table.clone(),
            chain: chain.name.clone(),
            handle: None,
            text: format!("policy {}", chain.policy),
        }
    }
}

struct Chain {
    family: String,
    table: String,
    name: String,
    prio: i64,
    policy: String,
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn jump_target<'a>(e: &'a Value, kind: &str) -> Option<&'a str> {
    e.get(kind)?.get("target")?.as_str()
}

fn is_nat_or_verdict(e: &Value) -> bool {
    [
        "accept",
        "drop",
        "reject",
        "return",
        "jump",
        "goto",
        "masquerade",
        "snat",
        "dnat",
        "redirect",
    ]
    .iter()
    .any(|k| e.get(k).is_some())
}

/// Whether a rule holds anything besides matches and harmless statements: a verdict, a
/// NAT, or a statement the evaluator does not know (a vmap, a queue, an iptables target),
/// any of which may decide the packet.
fn may_decide(exprs: &[Value]) -> bool {
    exprs
        .iter()
        .any(|e| e.get("match").is_none() && !is_harmless_statement(e) && !is_xt_match(e))
}

fn is_xt_match(e: &Value) -> bool {
    e.get("xt")
        .and_then(|x| x.get("type"))
        .and_then(Value::as_str)
        == Some("match")
}

/// Statements that neither match nor change what later matches see.
fn is_harmless_statement(e: &Value) -> bool {
    ["counter", "log", "notrack"]
        .iter()
        .any(|k| e.get(k).is_some())
}

/// An iptables-nft compat match (`-m conntrack --ctstate`, `-m state --state`): nft -j
/// names only the extension, while nft's text shows what it matches as `ct state A,B`.
/// Any other extension is not judged.
fn judge_xt(xt: &Value, text: &str, packet: &Packet) -> Truth {
    let name = xt.get("name").and_then(Value::as_str).unwrap_or("");
    if xt.get("type").and_then(Value::as_str) != Some("match") {
        return Truth::Unknown(format!("the iptables target `{name}` is not judged"));
    }
    // Only a plain `ct state A,B`: a negation or any other conntrack option is not judged.
    let plain = text.matches("ct ").count() == 1 && !text.contains("ct state !=");
    let states = text
        .split_once("ct state ")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(""));
    match (name, states) {
        ("conntrack" | "state", Some(states)) if !states.is_empty() && plain => {
            if states.split(',').any(|s| s == packet.ct_state) {
                Truth::Yes
            } else {
                Truth::No
            }
        }
        _ => Truth::Unknown(format!("the iptables extension `{name}` is not judged")),
    }
}

/// One `match` expression against the packet.
fn judge_match(m: &Value, packet: &Packet) -> Truth {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let (Some(left), Some(right)) = (m.get("left"), m.get("right")) else {
        return Truth::Unknown("a match without two sides".into());
    };
    let negate = match op {
        "==" | "in" => false,
        "!=" => true,
        other => return Truth::Unknown(format!("the comparison `{other}` is not judged")),
    };
    let value = match field_of(left, packet) {
        Ok(Some(v)) => v,
        // A field of another protocol (tcp dport on a udp packet): nft does not match.
        Ok(None) => return Truth::No,
        Err(why) => return Truth::Unknown(why),
    };
    let hit = match contains(right, &value) {
        Ok(hit) => hit,
        Err(why) => return Truth::Unknown(why),
    };
    if hit != negate {
        Truth::Yes
    } else {
        Truth::No
    }
}

/// A packet field's value.
#[derive(Debug)]
enum Field {
    Name(String),
    Addr(IpAddr),
    Number(u64),
    /// Protocol numbers also match their names.
    Proto(u8),
    CtState(&'static str),
}

fn field_of(left: &Value, p: &Packet) -> Result<Option<Field>, String> {
    if let Some(meta) = left.get("meta") {
        let key = meta.get("key").and_then(Value::as_str).unwrap_or("");
        return Ok(Some(match key {
            "iifname" => Field::Name(p.iifname.clone()),
            "oifname" => Field::Name(p.oifname.clone()),
            "l4proto" => Field::Proto(p.l4proto),
            "nfproto" => Field::Name(if p.saddr.is_ipv4() { "ipv4" } else { "ipv6" }.into()),
            other => return Err(format!("meta {other} is not judged")),
        }));
    }
    if let Some(payload) = left.get("payload") {
        let proto = payload
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("");
        let field = payload.get("field").and_then(Value::as_str).unwrap_or("");
        let ip_family_matches = match proto {
            "ip" => p.saddr.is_ipv4(),
            "ip6" => p.saddr.is_ipv6(),
            _ => true,
        };
        return Ok(match (proto, field) {
            ("ip" | "ip6", _) if !ip_family_matches => None,
            ("ip" | "ip6", "saddr") => Some(Field::Addr(p.saddr)),
            ("ip" | "ip6", "daddr") => Some(Field::Addr(p.daddr)),
            ("ip", "protocol") | ("ip6", "nexthdr") => Some(Field::Proto(p.l4proto)),
            ("tcp", _) if p.l4proto != 6 => None,
            ("udp", _) if p.l4proto != 17 => None,
            ("th", _) if !matches!(p.l4proto, 6 | 17) => {
                return Err("th (transport header) on a packet without ports".into())
            }
            ("tcp" | "udp" | "th", "dport") => p.dport.map(|v| Field::Number(v.into())),
            ("tcp" | "udp" | "th", "sport") => p.sport.map(|v| Field::Number(v.into())),
            _ => return Err(format!("{proto} {field} is not judged")),
        });
    }
    if let Some(fib) = left.get("fib") {
        let result = fib.get("result").and_then(Value::as_str);
        let flags: Vec<&str> = fib
            .get("flags")
            .and_then(Value::as_array)
            .map(|f| f.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if result == Some("type") && flags == ["daddr"] {
            let kind = if p.daddr_is_local { "local" } else { "unicast" };
            return Ok(Some(Field::Name(kind.into())));
        }
        return Err(format!("fib {} is not judged", fib));
    }
    if let Some(ct) = left.get("ct") {
        return match ct.get("key").and_then(Value::as_str) {
            Some("state") => Ok(Some(Field::CtState(p.ct_state))),
            Some(other) => Err(format!("ct {other} is not judged")),
            None => Err("a ct match without a key".into()),
        };
    }
    Err(format!("the match on {left} is not judged"))
}

/// Whether the right side (a value, a prefix, a range, an anonymous set or a list)
/// holds the field's value.
fn contains(right: &Value, value: &Field) -> Result<bool, String> {
    match right {
        Value::String(s) if s.starts_with('@') => Err(format!("the named set {s} is not read")),
        Value::Array(items) => any_of(items, value),
        Value::Object(o) if o.contains_key("set") => match &o["set"] {
            Value::Array(items) => any_of(items, value),
            single => contains(single, value),
        },
        _ => single_holds(right, value),
    }
}

fn any_of(items: &[Value], value: &Field) -> Result<bool, String> {
    for item in items {
        if contains(item, value)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn single_holds(right: &Value, value: &Field) -> Result<bool, String> {
    match value {
        Field::Name(name) => {
            let pattern = right
                .as_str()
                .ok_or_else(|| format!("an interface name compared with {right}"))?;
            Ok(name_matches(pattern, name))
        }
        Field::CtState(state) => {
            let s = right
                .as_str()
                .ok_or_else(|| format!("a ct state compared with {right}"))?;
            Ok(s == *state)
        }
        Field::Number(n) => number_holds(right, *n),
        Field::Proto(p) => match right {
            Value::String(s) => {
                Ok(protocol_number(s).ok_or_else(|| format!("protocol {s}"))? == *p)
            }
            _ => number_holds(right, u64::from(*p)),
        },
        Field::Addr(addr) => {
            if let Some(prefix) = right.get("prefix") {
                let net: IpAddr = prefix
                    .get("addr")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("the prefix {prefix}"))?;
                let len = prefix.get("len").and_then(Value::as_u64).unwrap_or(0) as u8;
                return Ok(crate::why::prefix_contains(net, len, *addr));
            }
            if let Some(range) = right.get("range").and_then(Value::as_array) {
                let bounds: Option<Vec<IpAddr>> = range
                    .iter()
                    .map(|b| b.as_str().and_then(|s| s.parse().ok()))
                    .collect();
                let bounds = bounds.ok_or_else(|| format!("the range {right}"))?;
                return Ok(bounds.len() == 2 && bounds[0] <= *addr && *addr <= bounds[1]);
            }
            let s = right
                .as_str()
                .ok_or_else(|| format!("an address compared with {right}"))?;
            let other: IpAddr = s.parse().map_err(|_| format!("the address {s}"))?;
            Ok(other == *addr)
        }
    }
}

fn number_holds(right: &Value, n: u64) -> Result<bool, String> {
    if let Some(v) = right.as_u64() {
        return Ok(v == n);
    }
    if let Some(range) = right.get("range").and_then(Value::as_array) {
        if let (Some(lo), Some(hi)) = (
            range.first().and_then(Value::as_u64),
            range.get(1).and_then(Value::as_u64),
        ) {
            return Ok(lo <= n && n <= hi);
        }
    }
    Err(format!("a number compared with {right}"))
}

/// nft's interface name match: a trailing `*` is a prefix wildcard; nothing else is
/// special (iptables' `+` wildcard is a plain character to nft).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if !pattern.ends_with("\\*") => name.starts_with(prefix),
        _ => pattern == name,
    }
}

fn protocol_number(name: &str) -> Option<u8> {
    Some(match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "gre" => 47,
        "esp" => 50,
        _ => return None,
    })
}

/// (family, table, chain, handle) -> rule text, from `nft -a list ruleset`'s lines
/// `RULE # handle N` inside `table F T {` and `chain C {`.
fn rule_texts(text: &str) -> Vec<((String, String, String, u64), String)> {
    let mut out = Vec::new();
    let (mut family, mut table, mut chain) = (String::new(), String::new(), String::new());
    for line in text.lines() {
        let trimmed = line.trim();
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        if words.first() == Some(&"table") && words.len() >= 3 {
            family = words[1].to_string();
            table = words[2].to_string();
        } else if words.first() == Some(&"chain") && words.len() >= 2 {
            chain = words[1].to_string();
        } else if let Some((rule, handle)) = trimmed.rsplit_once(" # handle ") {
            if let Ok(h) = handle.trim().parse() {
                out.push((
                    (family.clone(), table.clone(), chain.clone(), h),
                    rule.trim().to_string(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Packet {
        Packet {
            iifname: "ve-web".into(),
            oifname: "eth0".into(),
            saddr: "10.0.0.2".parse().unwrap(),
            daddr: "203.0.113.5".parse().unwrap(),
            l4proto: 6,
            sport: Some(40000),
            dport: Some(443),
            ct_state: "new",
            daddr_is_local: false,
        }
    }

    fn ruleset(items: Value) -> Ruleset {
        Ruleset::parse(&serde_json::json!({ "nftables": items }), "")
    }

    fn forward_chain(policy: &str) -> Value {
        serde_json::json!({"chain": {"family": "inet", "table": "filter", "name": "forward",
            "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": policy}})
    }

    fn rule(handle: u64, expr: Value) -> Value {
        serde_json::json!({"rule": {"family": "inet", "table": "filter", "chain": "forward",
            "handle": handle, "expr": expr}})
    }

    #[test]
    fn a_drop_policy_drops_what_no_rule_accepts() {
        let rs = ruleset(serde_json::json!([forward_chain("drop")]));
        let Filter::Dropped(r) = rs.filter("forward", &packet()) else {
            panic!()
        };
        assert_eq!(r.handle, None);
        assert_eq!(r.text, "policy drop");
    }

    #[test]
    fn a_wildcard_interface_accept_comes_before_the_policy() {
        let rs = ruleset(serde_json::json!([
            forward_chain("drop"),
            rule(
                2,
                serde_json::json!([
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "ve-*"}},
            {"accept": null}])
            )
        ]));
        assert!(
            matches!(rs.filter("forward", &packet()), Filter::Accepted(r) if r.handle == Some(2))
        );
    }

    #[test]
    fn an_iptables_plus_wildcard_matches_nothing_in_nft() {
        assert!(!name_matches("ve-+", "ve-web"));
        assert!(name_matches("ve-*", "ve-web"));
        assert!(name_matches("ve-web", "ve-web"));
    }

    #[test]
    fn prefixes_sets_ports_and_ct_state_are_judged() {
        let rs = ruleset(serde_json::json!([
            forward_chain("accept"),
            rule(
                3,
                serde_json::json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                "right": {"set": [80, 443]}}},
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
            {"counter": {"packets": 0, "bytes": 0}},
            {"drop": null}])
            )
        ]));
        assert!(
            matches!(rs.filter("forward", &packet()), Filter::Dropped(r) if r.handle == Some(3))
        );
        let mut reply = packet();
        reply.ct_state = "established";
        assert!(matches!(rs.filter("forward", &reply), Filter::Accepted(r) if r.handle.is_none()));
        let mut udp = packet();
        udp.l4proto = 17;
        assert!(matches!(rs.filter("forward", &udp), Filter::Accepted(_)));
    }

    #[test]
    fn a_named_set_or_a_mark_is_unknown_never_guessed() {
        let rs = ruleset(serde_json::json!([
            forward_chain("accept"),
            rule(
                4,
                serde_json::json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": "@blocked"}},
            {"drop": null}])
            )
        ]));
        assert!(
            matches!(rs.filter("forward", &packet()), Filter::Unknown(r, _) if r.handle == Some(4))
        );
        let rs = ruleset(serde_json::json!([
            forward_chain("accept"),
            rule(
                5,
                serde_json::json!([
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1}},
            {"drop": null}])
            )
        ]));
        assert!(matches!(
            rs.filter("forward", &packet()),
            Filter::Unknown(..)
        ));
    }

    #[test]
    fn jumps_return_and_fall_through_to_the_policy() {
        let rs = ruleset(serde_json::json!([
            forward_chain("drop"),
            rule(6, serde_json::json!([{"jump": {"target": "mine"}}])),
            {"rule": {"family": "inet", "table": "filter", "chain": "mine", "handle": 7,
                "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}},
                    "right": "eth0"}}, {"accept": null}]}},
        ]));
        assert!(
            matches!(rs.filter("forward", &packet()), Filter::Accepted(r) if r.handle == Some(7))
        );
        let mut other = packet();
        other.oifname = "eth1".into();
        assert!(matches!(rs.filter("forward", &other), Filter::Dropped(r) if r.handle.is_none()));
    }

    #[test]
    fn masquerade_on_the_egress_device_covers_its_sources() {
        let rs = ruleset(serde_json::json!([
            {"chain": {"family": "ip", "table": "nat", "name": "post", "handle": 1,
                "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
            {"rule": {"family": "ip", "table": "nat", "chain": "post", "handle": 2, "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": {"prefix": {"addr": "10.0.0.0", "len": 24}}}},
                {"masquerade": null}]}},
        ]));
        assert!(matches!(rs.source_nat(&packet()), Nat::Masqueraded(r) if r.handle == Some(2)));
        let mut v6 = packet();
        v6.saddr = "fd00::2".parse().unwrap();
        v6.daddr = "2001:db8::5".parse().unwrap();
        assert_eq!(rs.source_nat(&v6), Nat::NotCovered);
    }

    #[test]
    fn a_vmap_an_iptables_target_or_a_negated_ctstate_is_unknown() {
        let vmap = ruleset(serde_json::json!([
            forward_chain("drop"),
            rule(
                8,
                serde_json::json!([
            {"vmap": {"key": {"ct": {"key": "state"}}, "data": {"set": [["established", {"accept": null}]]}}}])
            )
        ]));
        assert!(
            matches!(vmap.filter("forward", &packet()), Filter::Unknown(r, _) if r.handle == Some(8))
        );
        let target = ruleset(serde_json::json!([
            forward_chain("accept"),
            rule(
                9,
                serde_json::json!([
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}},
            {"xt": {"type": "target", "name": "REJECT"}}])
            )
        ]));
        assert!(matches!(
            target.filter("forward", &packet()),
            Filter::Unknown(..)
        ));
        let negated = Ruleset::parse(
            &serde_json::json!({"nftables": [forward_chain("drop"), rule(10, serde_json::json!([
                {"xt": {"type": "match", "name": "conntrack"}}, {"accept": null}]))]}),
            "table inet filter {\n\tchain forward {\n\t\tct state != new counter accept # handle 10\n\t}\n}\n",
        );
        assert!(matches!(
            negated.filter("forward", &packet()),
            Filter::Unknown(..)
        ));
    }

    #[test]
    fn a_nat_sub_chain_that_accepts_ends_the_search_without_nat() {
        let nat = |chain: &str, handle: u64, expr: Value| {
            serde_json::json!({"rule": {"family": "ip", "table": "nat", "chain": chain,
                "handle": handle, "expr": expr}})
        };
        let rs = ruleset(serde_json::json!([
            {"chain": {"family": "ip", "table": "nat", "name": "post", "handle": 1,
                "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
            nat("post", 2, serde_json::json!([{"jump": {"target": "skip"}}])),
            nat("post", 3, serde_json::json!([{"masquerade": null}])),
            nat("skip", 4, serde_json::json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": {"prefix": {"addr": "203.0.113.0", "len": 24}}}},
                {"accept": null}])),
        ]));
        assert_eq!(rs.source_nat(&packet()), Nat::NotCovered);
        let mut elsewhere = packet();
        elsewhere.daddr = "198.51.100.1".parse().unwrap();
        assert!(matches!(rs.source_nat(&elsewhere), Nat::Masqueraded(r) if r.handle == Some(3)));
    }

    #[test]
    fn dnat_stops_at_an_accept_before_it_and_a_port_range_is_unknown() {
        let out = |handle: u64, expr: Value| {
            serde_json::json!({"rule": {"family": "ip", "table": "nat", "chain": "out",
                "handle": handle, "expr": expr}})
        };
        let to_host = |port: Value| {
            ruleset(serde_json::json!([
                {"chain": {"family": "ip", "table": "nat", "name": "out", "handle": 1,
                    "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
                out(2, serde_json::json!([
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "right": "127.0.0.1"}}, {"accept": null}])),
                out(3, serde_json::json!([
                    {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                        "right": 443}},
                    {"dnat": {"addr": "10.77.1.2", "port": port}}])),
            ]))
        };
        let mut local = packet();
        local.daddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            to_host(Value::from(80)).destination_nat("output", &local),
            Dnat::NotCovered
        );
        assert!(matches!(
            to_host(Value::from(80)).destination_nat("output", &packet()),
            Dnat::To(_, addr, Some(80)) if addr == "10.77.1.2".parse::<IpAddr>().unwrap()
        ));
        let range = serde_json::json!({"range": [8000, 8010]});
        assert!(matches!(
            to_host(range).destination_nat("output", &packet()),
            Dnat::Unknown(..)
        ));
    }

    #[test]
    fn rule_texts_come_from_nft_dash_a() {
        let text = "table inet filter { # handle 1\n\tchain forward { # handle 1\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tiifname \"ve-*\" accept # handle 2\n\t}\n}\n";
        let texts = rule_texts(text);
        assert_eq!(
            texts,
            vec![(
                ("inet".into(), "filter".into(), "forward".into(), 2),
                "iifname \"ve-*\" accept".into()
            )]
        );
    }
}
