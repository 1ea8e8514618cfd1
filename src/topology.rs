//! `machnet topology`: the host and its machines as a graph — namespaces, their
//! interfaces and addresses, veth pairs across namespaces, bridges, default routes — for
//! people (text), programs (JSON) and pictures (Graphviz dot, Mermaid).

use std::fmt::Write;

use serde::Serialize;

use crate::netns::Isolation;
use crate::survey::{MachineState, Namespace, Survey};

#[derive(Debug, Serialize)]
pub struct Topology {
    pub namespaces: Vec<NamespaceNode>,
    pub links: Vec<Edge>,
}

#[derive(Debug, Serialize)]
pub struct NamespaceNode {
    pub name: String,
    /// "host", "machine", "machine-sharing-host" or "stale"/"unreadable".
    pub kind: &'static str,
    /// Why an unreadable machine could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub interfaces: Vec<Interface>,
    pub default_routes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Interface {
    pub name: String,
    /// IFLA_INFO_KIND ("veth", "bridge", …), or null.
    pub kind: Option<String>,
    pub state: &'static str,
    pub addresses: Vec<String>,
    /// The bridge it is a port of, in the same namespace.
    pub master: Option<String>,
}

/// An edge between two interfaces: `veth` (the two ends of a pair) or `port` (an
/// interface enslaved to a bridge).
#[derive(Debug, Serialize)]
pub struct Edge {
    pub kind: &'static str,
    pub a: End,
    pub b: End,
}

#[derive(Debug, Serialize)]
pub struct End {
    pub namespace: String,
    pub interface: String,
}

fn interfaces(ns: &Namespace) -> Vec<Interface> {
    ns.links
        .iter()
        .map(|l| Interface {
            name: l.ifname.clone(),
            kind: l.detail.kind.clone(),
            state: l.operstate,
            addresses: l
                .addr_info
                .iter()
                .map(|a| format!("{}/{}", a.local, a.prefixlen))
                .collect(),
            master: l
                .detail
                .master
                .and_then(|m| ns.link(m))
                .map(|m| m.ifname.clone()),
        })
        .collect()
}

fn default_routes(ns: &Namespace) -> Vec<String> {
    ns.routes
        .iter()
        .filter(|r| r.is_default())
        .map(|r| {
            let mut text = String::from("default");
            if let Some(gw) = r.gateway {
                let _ = write!(text, " via {gw}");
            }
            if let Some(dev) = r.oif.and_then(|i| ns.link(i)) {
                let _ = write!(text, " dev {}", dev.ifname);
            }
            text
        })
        .collect()
}

fn end(namespace: &str, interface: &str) -> End {
    End {
        namespace: namespace.into(),
        interface: interface.into(),
    }
}

pub fn build(survey: &Survey) -> Topology {
    let mut namespaces = vec![NamespaceNode {
        name: ".host".into(),
        kind: "host",
        reason: None,
        interfaces: interfaces(&survey.host),
        default_routes: default_routes(&survey.host),
    }];
    let mut links = Vec::new();
    // Bridge ports on the host.
    for l in &survey.host.links {
        if let Some(bridge) = l.detail.master.and_then(|m| survey.host.link(m)) {
            links.push(Edge {
                kind: "port",
                a: end(".host", &l.ifname),
                b: end(".host", &bridge.ifname),
            });
        }
    }
    for m in &survey.machines {
        let kind = match (&m.state, m.isolation) {
            (MachineState::Stale(_) | MachineState::LeaderReused(_), _) => "stale",
            (MachineState::Unreadable(_), _) => "unreadable",
            (_, Some(Isolation::SharesHost)) => "machine-sharing-host",
            _ => "machine",
        };
        let private = kind == "machine";
        let net = m.net.as_ref().filter(|_| private);
        namespaces.push(NamespaceNode {
            name: m.name.clone(),
            kind,
            reason: match &m.state {
                MachineState::Unreadable(why) => Some(why.clone()),
                _ => None,
            },
            interfaces: net.map(interfaces).unwrap_or_default(),
            default_routes: net.map(default_routes).unwrap_or_default(),
        });
        let Some(net) = net else { continue };
        for l in &net.links {
            if let Some(peer) = survey.host_peer(m, l) {
                links.push(Edge {
                    kind: "veth",
                    a: end(&m.name, &l.ifname),
                    b: end(".host", &peer.ifname),
                });
            }
            if let Some(bridge) = l.detail.master.and_then(|i| net.link(i)) {
                links.push(Edge {
                    kind: "port",
                    a: end(&m.name, &l.ifname),
                    b: end(&m.name, &bridge.ifname),
                });
            }
        }
    }
    Topology { namespaces, links }
}

pub fn text(t: &Topology) -> String {
    let mut out = String::new();
    for ns in &t.namespaces {
        let _ = writeln!(out, "{} ({})", ns.name, ns.kind);
        if let Some(why) = &ns.reason {
            let _ = writeln!(out, "  ! {why}");
        }
        for r in &ns.default_routes {
            let _ = writeln!(out, "  route {r}");
        }
        for i in &ns.interfaces {
            let mut line = format!("  {} {}", i.name, i.state);
            if let Some(kind) = &i.kind {
                let _ = write!(line, " [{kind}]");
            }
            if !i.addresses.is_empty() {
                let _ = write!(line, " {}", i.addresses.join(" "));
            }
            if let Some(master) = &i.master {
                let _ = write!(line, " master {master}");
            }
            for e in t.links.iter().filter(|e| e.kind == "veth") {
                let other = if e.a.namespace == ns.name && e.a.interface == i.name {
                    Some(&e.b)
                } else if e.b.namespace == ns.name && e.b.interface == i.name {
                    Some(&e.a)
                } else {
                    None
                };
                if let Some(o) = other {
                    let _ = write!(line, " <-veth-> {}:{}", o.namespace, o.interface);
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

pub fn json(t: &Topology) -> String {
    let mut s = serde_json::to_string(t).expect("topology serialises");
    s.push('\n');
    s
}

/// A node id both dot and Mermaid accept: letters, digits and underscores only, made
/// unique by spelling every other byte as its hex value.
fn node_id(namespace: &str, interface: &str) -> String {
    let mut id = String::from("n_");
    for part in [namespace, interface] {
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() {
                id.push(b as char);
            } else {
                let _ = write!(id, "_{b:02x}");
            }
        }
        id.push_str("__");
    }
    id
}

fn label_of(i: &Interface) -> String {
    let mut lines = vec![i.name.clone()];
    lines.extend(i.addresses.iter().cloned());
    if i.state != "UP" && i.state != "UNKNOWN" {
        lines.push(i.state.to_lowercase());
    }
    lines.join("\\n")
}

/// What stands in a namespace box with no interfaces to show.
fn placeholder(ns: &NamespaceNode) -> &'static str {
    match ns.kind {
        "machine-sharing-host" => "(uses the host's namespace)",
        "stale" => "(leader gone)",
        "unreadable" => "(could not be read)",
        _ => "(no interfaces)",
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("\\\\n", "\\n")
}

pub fn dot(t: &Topology) -> String {
    let mut out = String::from(
        "graph machnet {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
    );
    for (n, ns) in t.namespaces.iter().enumerate() {
        let mut title = format!("{} ({})", ns.name, ns.kind);
        for r in &ns.default_routes {
            let _ = write!(title, "\\n{r}");
        }
        let _ = writeln!(
            out,
            "  subgraph cluster_{n} {{\n    label=\"{}\";\n    style=rounded;",
            dot_escape(&title)
        );
        if ns.interfaces.is_empty() {
            let _ = writeln!(
                out,
                "    {} [label=\"{}\", shape=plaintext];",
                node_id(&ns.name, ""),
                placeholder(ns)
            );
        }
        for i in &ns.interfaces {
            let shape = if i.kind.as_deref() == Some("bridge") {
                ", shape=hexagon"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label=\"{}\"{shape}];",
                node_id(&ns.name, &i.name),
                dot_escape(&label_of(i))
            );
        }
        out.push_str("  }\n");
    }
    for e in &t.links {
        let style = if e.kind == "veth" {
            "[label=\"veth\", penwidth=2]"
        } else {
            "[style=dashed]"
        };
        let _ = writeln!(
            out,
            "  {} -- {} {style};",
            node_id(&e.a.namespace, &e.a.interface),
            node_id(&e.b.namespace, &e.b.interface)
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;").replace("\\n", "<br/>")
}

pub fn mermaid(t: &Topology) -> String {
    let mut out = String::from("flowchart LR\n");
    for (n, ns) in t.namespaces.iter().enumerate() {
        let mut title = format!("{} ({})", ns.name, ns.kind);
        for r in &ns.default_routes {
            let _ = write!(title, "\\n{r}");
        }
        let _ = writeln!(out, "  subgraph ns{n}[\"{}\"]", mermaid_escape(&title));
        if ns.interfaces.is_empty() {
            let _ = writeln!(
                out,
                "    {}[\"{}\"]",
                node_id(&ns.name, ""),
                placeholder(ns)
            );
        }
        for i in &ns.interfaces {
            let (open, close) = if i.kind.as_deref() == Some("bridge") {
                ("{{", "}}")
            } else {
                ("[", "]")
            };
            let _ = writeln!(
                out,
                "    {}{open}\"{}\"{close}",
                node_id(&ns.name, &i.name),
                mermaid_escape(&label_of(i))
            );
        }
        out.push_str("  end\n");
    }
    for e in &t.links {
        let arrow = if e.kind == "veth" { "===|veth|" } else { "-.-" };
        let _ = writeln!(
            out,
            "  {} {arrow} {}",
            node_id(&e.a.namespace, &e.a.interface),
            node_id(&e.b.namespace, &e.b.interface)
        );
    }
    out
}
