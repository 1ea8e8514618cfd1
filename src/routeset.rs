//! The route-set file `machnet apply` reads: which machines must have which routes.
//!
//! TOML for people, JSON for machines (the NixOS module writes JSON); both have one shape:
//!
//! ```toml
//! [machines.qbittorrent]
//! routes = [
//!   { destination = "10.50.0.0/16", gateway = "10.77.1.1", dev = "host0", metric = 10 },
//!   { destination = "192.0.2.0/24", type = "blackhole" },
//! ]
//! ```
//!
//! Each declared route is turned into `ip route` words and read by the same parser as
//! `machnet route add`, so a route means exactly what it would mean on the command line.
//! Unknown keys are refused: a typo (`gatway`) must not silently drop a gateway.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::route::names::Names;
use crate::route::spec::{self, Purpose, RouteSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSet {
    /// The machines, by name (any target machnet takes: a machine, `netns:NAME`, …).
    #[serde(default)]
    pub machines: BTreeMap<String, MachineRoutes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRoutes {
    #[serde(default)]
    pub routes: Vec<DeclaredRoute>,
}

/// A table or protocol: a number, or a name from iproute2's files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum NumberOrName {
    Number(u32),
    Name(String),
}

impl std::fmt::Display for NumberOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NumberOrName::Number(n) => write!(f, "{n}"),
            NumberOrName::Name(s) => f.write_str(s),
        }
    }
}

/// One route as declared. Absent (or JSON `null`) means "not given": the same default as
/// `ip route add` without that word.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredRoute {
    /// `default`, a prefix (`10.0.0.0/8`, `fd00::/64`) or a host address.
    pub destination: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub metric: Option<u32>,
    pub table: Option<NumberOrName>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub src: Option<String>,
    pub mtu: Option<u32>,
    pub onlink: Option<bool>,
    pub proto: Option<NumberOrName>,
}

/// The route types `ip route add` takes as its first word.
const ROUTE_TYPES: &[&str] = &[
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "nat",
];

impl DeclaredRoute {
    /// The route in `ip route` syntax, the way `machnet route add` would take it.
    pub fn words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(kind) = &self.kind {
            words.push(kind.clone());
        }
        words.push(self.destination.clone());
        let mut pair = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                words.push(key.to_string());
                words.push(value);
            }
        };
        pair("via", self.gateway.clone());
        pair("dev", self.dev.clone());
        pair("metric", self.metric.map(|m| m.to_string()));
        pair("table", self.table.as_ref().map(ToString::to_string));
        pair("src", self.src.clone());
        pair("mtu", self.mtu.map(|m| m.to_string()));
        pair("proto", self.proto.as_ref().map(ToString::to_string));
        if self.onlink == Some(true) {
            words.push("onlink".into());
        }
        words
    }

    /// Parses the route as `ip route add` would. The family comes from the addresses;
    /// `default` with neither gateway nor source is IPv4 (write `::/0` for IPv6).
    pub fn to_spec(&self, names: &Names) -> std::result::Result<RouteSpec, String> {
        for (field, value) in [
            ("destination", Some(&self.destination)),
            ("dev", self.dev.as_ref()),
        ] {
            if value.is_some_and(|v| v.split_whitespace().count() != 1) {
                return Err(format!("{field} must be one word, not {value:?}"));
            }
        }
        if let Some(kind) = &self.kind {
            if !ROUTE_TYPES.contains(&kind.as_str()) {
                return Err(format!(
                    "type {kind:?} is not a route type (one of {})",
                    ROUTE_TYPES.join(", ")
                ));
            }
        }
        let words = self.words();
        spec::parse(&words, Purpose::Add, 0, names).map_err(|e| e.to_string())
    }
}

impl RouteSet {
    /// Reads FILE (`-` for stdin). JSON when the name ends in `.json` or the text starts
    /// with `{`; TOML otherwise.
    pub fn load(path: &Path) -> Result<RouteSet> {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| Error::io("reading the route set from stdin", e))?
        } else {
            std::fs::read_to_string(path).map_err(|e| {
                let what = format!("reading the route set {}", path.display());
                match e.kind() {
                    std::io::ErrorKind::NotFound => Error::Usage(format!("{what}: {e}")),
                    _ => Error::io(what, e),
                }
            })?
        };
        let is_json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        RouteSet::parse(&text, is_json)
            .map_err(|e| Error::Usage(format!("malformed route set {}: {e}", path.display())))
    }

    pub fn parse(text: &str, is_json: bool) -> std::result::Result<RouteSet, String> {
        if is_json {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
        }
    }
}

#[cfg(test)]
impl DeclaredRoute {
    /// A route to `destination` with nothing else given.
    fn to(destination: &str) -> DeclaredRoute {
        DeclaredRoute {
            destination: destination.into(),
            gateway: None,
            dev: None,
            metric: None,
            table: None,
            kind: None,
            src: None,
            mtu: None,
            onlink: None,
            proto: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_read_the_same() {
        let toml = r#"
            [machines.web]
            routes = [
              { destination = "10.50.0.0/16", gateway = "10.77.1.1", dev = "host0", metric = 10 },
              { destination = "192.0.2.0/24", type = "blackhole", table = 100 },
            ]
        "#;
        let json = r#"{"machines": {"web": {"routes": [
            {"destination": "10.50.0.0/16", "gateway": "10.77.1.1", "dev": "host0", "metric": 10,
             "src": null},
            {"destination": "192.0.2.0/24", "type": "blackhole", "table": 100}]}}}"#;
        let a = RouteSet::parse(toml, false).unwrap();
        let b = RouteSet::parse(json, true).unwrap();
        assert_eq!(a.machines["web"].routes, b.machines["web"].routes);
        assert_eq!(
            a.machines["web"].routes[0].words().join(" "),
            "10.50.0.0/16 via 10.77.1.1 dev host0 metric 10"
        );
        assert_eq!(
            a.machines["web"].routes[1].words().join(" "),
            "blackhole 192.0.2.0/24 table 100"
        );
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        let err = RouteSet::parse(
            r#"{"machines": {"web": {"routes": [{"destination": "default", "gatway": "10.0.0.1"}]}}}"#,
            true,
        )
        .unwrap_err();
        assert!(err.contains("gatway"), "{err}");
    }

    #[test]
    fn every_field_reaches_the_spec() {
        let route = DeclaredRoute {
            destination: "10.9.0.0/16".into(),
            gateway: Some("10.77.1.1".into()),
            dev: Some("host0".into()),
            metric: Some(7),
            table: Some(NumberOrName::Name("main".into())),
            kind: Some("unicast".into()),
            src: Some("10.77.1.2".into()),
            mtu: Some(1400),
            onlink: Some(true),
            proto: Some(NumberOrName::Name("static".into())),
        };
        let spec = route.to_spec(&Names::builtin()).unwrap();
        assert_eq!(spec.metric, Some(7));
        assert_eq!(spec.protocol, Some(4));
        assert!(spec.nexthop.onlink);
        assert_eq!(spec.metrics.len(), 1);
        assert_eq!(spec.prefsrc, Some("10.77.1.2".parse().unwrap()));
    }

    #[test]
    fn proto_machnet_needs_no_rt_protos_file() {
        let route = DeclaredRoute {
            proto: Some(NumberOrName::Name("machnet".into())),
            ..DeclaredRoute::to("192.0.2.0/24")
        };
        assert_eq!(
            route.to_spec(&Names::builtin()).unwrap().protocol,
            Some(109)
        );
    }

    #[test]
    fn words_cannot_smuggle_extra_route_syntax() {
        let route = DeclaredRoute::to("10.0.0.0/8 via 1.2.3.4");
        assert!(route.to_spec(&Names::builtin()).is_err());
    }
}
