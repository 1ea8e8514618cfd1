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

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
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
        self.check_addresses()?;
        let words = self.words();
        spec::parse(&words, Purpose::Add, 0, names).map_err(|e| e.to_string())
    }

    /// Addresses in a declared set are written out in full. `ip` on a command line also
    /// takes `10/8` for 10.0.0.0/8 and reads `010` as octal 8, and masks an IPv6 prefix's
    /// host bits; in a file that apply enforces, each is far likelier a typo than meant.
    fn check_addresses(&self) -> Result<(), String> {
        if self.destination != "default" {
            let address = self.destination.split('/').next().unwrap_or_default();
            let addr: std::net::IpAddr = address.parse().map_err(|_| {
                format!(
                    "destination {:?} is not written out in full (as 10.0.0.0/8 or fd00::/64)",
                    self.destination
                )
            })?;
            // Refuses a bad length, and IPv4 host bits; IPv6 ones it masks, so compare.
            let prefix = spec::parse_prefix(&self.destination, 0)?;
            if let Some(masked) = prefix.addr.filter(|masked| *masked != addr) {
                return Err(format!(
                    "destination {:?} has host bits set (the prefix is {masked}/{})",
                    self.destination, prefix.len
                ));
            }
        }
        for (field, value) in [("gateway", &self.gateway), ("src", &self.src)] {
            if let Some(value) = value {
                value.parse::<std::net::IpAddr>().map_err(|_| {
                    format!("{field} {value:?} is not an address written out in full")
                })?;
            }
        }
        Ok(())
    }
}

/// Where [`read`] hands what it reads, in file order.
pub trait RouteSink {
    /// A machine's routes begin (every machine, one with no routes too).
    fn machine(&mut self, name: &str) -> std::result::Result<(), String>;
    /// The next route of the machine last begun. An error stops the reading; it is
    /// reported as it is, so it should say where (file, machine, route).
    fn route(&mut self, route: DeclaredRoute) -> std::result::Result<(), String>;
}

/// Why a route set could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Not a route set: bad JSON or TOML, an unknown key, a machine twice.
    Malformed(String),
    /// The sink refused something it was handed.
    Refused(String),
    Io(std::io::Error),
}

/// Reads the route set in FILE (`-`: stdin) into `sink`. JSON when the name ends in
/// `.json` or the text starts with `{`; TOML otherwise. JSON is streamed, one route at a
/// time, so a million routes never sit in memory as text or as parsed values; TOML
/// (written by people, so small) is read whole.
pub fn read(path: &Path, sink: &mut impl RouteSink) -> Result<()> {
    let json_name = path.extension().is_some_and(|e| e == "json");
    let outcome = if path == Path::new("-") {
        read_from(std::io::stdin().lock(), json_name, sink)
    } else {
        let file = std::fs::File::open(path).map_err(|e| {
            let what = format!("reading the route set {}", path.display());
            match e.kind() {
                std::io::ErrorKind::NotFound => Error::Usage(format!("{what}: {e}")),
                _ => Error::io(what, e),
            }
        })?;
        read_from(BufReader::with_capacity(1 << 16, file), json_name, sink)
    };
    outcome.map_err(|e| match e {
        ReadError::Malformed(why) => {
            Error::Usage(format!("malformed route set {}: {why}", path.display()))
        }
        ReadError::Refused(why) => Error::Usage(why),
        ReadError::Io(e) => Error::io(format!("reading the route set {}", path.display()), e),
    })
}

/// As [`read`], from any reader; `json` forces JSON (otherwise it is told by a leading `{`).
pub fn read_from(
    mut input: impl BufRead,
    json: bool,
    sink: &mut impl RouteSink,
) -> std::result::Result<(), ReadError> {
    // The leading whitespace read past is handed back to the parsers as it stood from its
    // last newline on, with the newlines before that, so that their errors name the line
    // and column the user sees.
    let mut skipped = Vec::new();
    let starts_with_brace = loop {
        let buf = input.fill_buf().map_err(ReadError::Io)?;
        let (space, brace) = match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(at) => (&buf[..at], Some(buf[at] == b'{')),
            None if buf.is_empty() => (buf, Some(false)),
            None => (buf, None),
        };
        for &byte in space {
            if byte == b'\n' {
                skipped.retain(|b| *b == b'\n');
            }
            skipped.push(byte);
        }
        let used = space.len();
        input.consume(used);
        if let Some(brace) = brace {
            break brace;
        }
    };
    let mut input = std::io::Cursor::new(skipped).chain(input);
    if json || starts_with_brace {
        let mut reader = Reader {
            sink,
            refused: None,
        };
        let mut de = serde_json::Deserializer::from_reader(input);
        let top = OnlyKey {
            keys: &["machines"],
            expecting: "a route set: {\"machines\": {...}}",
            value: Machines(&mut reader),
        };
        let parsed = top.deserialize(&mut de).and_then(|()| de.end());
        return match (parsed, reader.refused) {
            (_, Some(why)) => Err(ReadError::Refused(why)),
            (Err(e), None) if e.is_io() => Err(ReadError::Io(e.into())),
            (Err(e), None) => Err(ReadError::Malformed(e.to_string())),
            (Ok(()), None) => Ok(()),
        };
    }
    let mut text = String::new();
    input.read_to_string(&mut text).map_err(ReadError::Io)?;
    let set: RouteSet = toml::from_str(&text)
        .map_err(|e| ReadError::Malformed(e.to_string().trim_end().replace('\n', " ")))?;
    for (name, machine) in set.machines {
        sink.machine(&name).map_err(ReadError::Refused)?;
        for route in machine.routes {
            sink.route(route).map_err(ReadError::Refused)?;
        }
    }
    Ok(())
}

/// The streaming JSON reader: `{"machines": {NAME: {"routes": [ROUTE, …]}, …}}`, with the
/// same rules as the structs above (unknown keys refused), and a machine named twice
/// refused rather than the last one silently winning.
struct Reader<'s, S> {
    sink: &'s mut S,
    /// What the sink refused: reported as it is, not as malformed JSON.
    refused: Option<String>,
}

impl<S: RouteSink> Reader<'_, S> {
    fn refuse<E: de::Error>(&mut self, why: String) -> E {
        self.refused = Some(why);
        E::custom("refused")
    }
}

struct Machines<'r, 's, S>(&'r mut Reader<'s, S>);
struct Routes<'r, 's, S>(&'r mut Reader<'s, S>);

/// A JSON object whose one key may only be `keys[0]`, its value read by `value`: the top
/// level (`machines`) and each machine (`routes`).
struct OnlyKey<T> {
    keys: &'static [&'static str],
    expecting: &'static str,
    value: T,
}

impl<'de, T: DeserializeSeed<'de, Value = ()>> DeserializeSeed<'de> for OnlyKey<T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeSeed<'de, Value = ()>> Visitor<'de> for OnlyKey<T> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut value = Some(self.value);
        while let Some(key) = map.next_key::<String>()? {
            if key != self.keys[0] {
                return Err(de::Error::unknown_field(&key, self.keys));
            }
            let Some(seed) = value.take() else {
                return Err(de::Error::duplicate_field(self.keys[0]));
            };
            map.next_value_seed(seed)?;
        }
        Ok(())
    }
}

impl<'de, S: RouteSink> DeserializeSeed<'de> for Machines<'_, '_, S> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: RouteSink> Visitor<'de> for Machines<'_, '_, S> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("machines by name")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut names = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !names.insert(name.clone()) {
                return Err(de::Error::custom(format!(
                    "machine {name:?} is declared twice"
                )));
            }
            if let Err(why) = self.0.sink.machine(&name) {
                return Err(self.0.refuse(why));
            }
            map.next_value_seed(OnlyKey {
                keys: &["routes"],
                expecting: "a machine: {\"routes\": [...]}",
                value: Routes(&mut *self.0),
            })?;
        }
        Ok(())
    }
}

impl<'de, S: RouteSink> DeserializeSeed<'de> for Routes<'_, '_, S> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: RouteSink> Visitor<'de> for Routes<'_, '_, S> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of routes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(route) = seq.next_element::<DeclaredRoute>()? {
            if let Err(why) = self.0.sink.route(route) {
                return Err(self.0.refuse(why));
            }
        }
        Ok(())
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

    /// Every machine and route, as read.
    #[derive(Debug, Default)]
    struct Collected(Vec<(String, Vec<DeclaredRoute>)>);

    impl RouteSink for Collected {
        fn machine(&mut self, name: &str) -> std::result::Result<(), String> {
            self.0.push((name.to_string(), Vec::new()));
            Ok(())
        }
        fn route(&mut self, route: DeclaredRoute) -> std::result::Result<(), String> {
            if route.destination == "refuse-me" {
                return Err("the sink said no".into());
            }
            self.0.last_mut().unwrap().1.push(route);
            Ok(())
        }
    }

    /// Each machine's routes, as read.
    #[derive(Debug)]
    struct ReadSet {
        machines: BTreeMap<String, Vec<DeclaredRoute>>,
    }

    fn parse(text: &str, json: bool) -> std::result::Result<ReadSet, String> {
        let mut got = Collected::default();
        read_from(text.as_bytes(), json, &mut got).map_err(|e| match e {
            ReadError::Malformed(why) => format!("malformed: {why}"),
            ReadError::Refused(why) => format!("refused: {why}"),
            ReadError::Io(e) => format!("io: {e}"),
        })?;
        Ok(ReadSet {
            machines: got.0.into_iter().collect(),
        })
    }

    #[test]
    fn json_is_told_by_its_brace_and_streams_every_machine() {
        let json = "\n  {\"machines\": {\"b\": {\"routes\": [{\"destination\": \"10.0.0.0/8\"}]}, \"a\": {}}}\n";
        let set = parse(json, false).unwrap();
        assert_eq!(set.machines["b"].len(), 1);
        assert!(set.machines["a"].is_empty());
    }

    /// The whitespace read past to tell JSON from TOML is handed back: errors name the
    /// line and column the user sees.
    #[test]
    fn errors_after_leading_blank_lines_name_the_right_line() {
        let err = parse("\n\n  {\"machines\": {\"a\": {\"routes\": [}}}", false).unwrap_err();
        assert!(err.contains("line 3 column"), "{err}");
        let err = parse("\n\n\n[machines.a]\nroutes = [", false).unwrap_err();
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn a_machine_declared_twice_is_refused() {
        let err = parse(
            r#"{"machines": {"web": {"routes": []}, "web": {"routes": []}}}"#,
            true,
        )
        .unwrap_err();
        assert!(err.contains("\"web\" is declared twice"), "{err}");
    }

    /// What `ip` takes on a command line but a declared set must write out in full.
    #[test]
    fn declared_addresses_are_written_out_in_full() {
        let route = |json: &str| -> std::result::Result<RouteSpec, String> {
            let declared: DeclaredRoute = serde_json::from_str(json).unwrap();
            declared.to_spec(&Names::builtin())
        };
        for (json, says) in [
            (r#"{"destination": "10/8"}"#, "not written out in full"),
            (
                r#"{"destination": "010.0.0.0/8"}"#,
                "not written out in full",
            ),
            (r#"{"destination": "fd00::1/64", "dev": "lo"}"#, "host bits"),
            (r#"{"destination": "10.1.0.0/8"}"#, "host bits"),
            (r#"{"destination": "10.0.0.0/x"}"#, "prefix length"),
            (
                r#"{"destination": "10.0.0.0/8", "gateway": "10.0.0.010"}"#,
                "gateway \"10.0.0.010\"",
            ),
            (
                r#"{"destination": "10.0.0.0/8", "src": "1", "dev": "lo"}"#,
                "src \"1\"",
            ),
        ] {
            let err = route(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
        }
        for json in [
            r#"{"destination": "default", "gateway": "10.0.0.1"}"#,
            r#"{"destination": "10.0.0.0/8", "gateway": "10.0.0.1"}"#,
            r#"{"destination": "fd00::/64", "gateway": "fd88::1"}"#,
            r#"{"destination": "10.1.2.3", "type": "blackhole"}"#,
        ] {
            assert!(route(json).is_ok(), "{json}: {:?}", route(json));
        }
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        for text in [
            r#"{"machines": {}, "extra": 1}"#,
            r#"{"machines": {"web": {"routes": [], "extra": 1}}}"#,
        ] {
            let err = parse(text, true).unwrap_err();
            assert!(err.contains("unknown field `extra`"), "{err}");
        }
        let err = parse(r#"{"machines": {}} trailing"#, true).unwrap_err();
        assert!(err.starts_with("malformed"), "{err}");
    }

    #[test]
    fn what_the_sink_refuses_is_reported_as_it_said() {
        for (text, json) in [
            (
                r#"{"machines": {"web": {"routes": [{"destination": "refuse-me"}]}}}"#,
                true,
            ),
            (
                "[machines.web]\nroutes = [{ destination = \"refuse-me\" }]\n",
                false,
            ),
        ] {
            assert_eq!(parse(text, json).unwrap_err(), "refused: the sink said no");
        }
    }

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
        let a = parse(toml, false).unwrap();
        let b = parse(json, true).unwrap();
        assert_eq!(a.machines["web"], b.machines["web"]);
        assert_eq!(
            a.machines["web"][0].words().join(" "),
            "10.50.0.0/16 via 10.77.1.1 dev host0 metric 10"
        );
        assert_eq!(
            a.machines["web"][1].words().join(" "),
            "blackhole 192.0.2.0/24 table 100"
        );
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        let err = parse(
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
