//! The names iproute2 prints for numbers: route protocols, scopes, tables, realms, DS
//! fields, route types. Read from the same files `ip` reads (rt_protos, rt_protos.d/*.conf,
//! rt_tables, …) so `proto machnet` appears in both as soon as the package's file is there.
//!
//! One simplification against iproute2 6.1: it consults a file only for numbers its
//! built-in list lacks, so a file that *renames* a built-in number (say "4 mine") is
//! ignored by `ip` until an unknown number happens to be printed first. Here a file always
//! wins. No distribution ships such a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where iproute2 looks: /etc first (admin overrides), then the vendor directories newer
/// iproute2 releases use.
const CONFIG_DIRS: [&str; 3] = ["/etc/iproute2", "/usr/lib/iproute2", "/usr/share/iproute2"];

/// The routing protocol number machnet's routes carry unless told otherwise.
pub const MACHNET_PROTOCOL: u8 = 109;

#[derive(Debug, Clone)]
pub struct Names {
    protocols: Vec<Option<String>>,
    scopes: Vec<Option<String>>,
    realms: Vec<Option<String>>,
    dsfields: Vec<Option<String>>,
    /// id → the name printed for it (the last one loaded, as in iproute2).
    tables: HashMap<u32, String>,
    /// Every table name → its id: a table may have several names, all accepted as input.
    table_ids: HashMap<String, u32>,
    /// Device groups (`group`), id → name: `ip rule` prints `suppress_ifgroup` with them.
    groups: HashMap<u32, String>,
}

impl Names {
    /// The names as iproute2 on this machine would print them.
    pub fn load() -> Names {
        Names::load_from(&CONFIG_DIRS.map(PathBuf::from))
    }

    pub fn load_from(dirs: &[PathBuf]) -> Names {
        let mut names = Names::builtin();
        load_table(dirs, "rt_protos", |id, n| set(&mut names.protocols, id, n));
        load_dir(dirs, "rt_protos.d", |id, n| {
            set(&mut names.protocols, id, n)
        });
        load_table(dirs, "rt_scopes", |id, n| set(&mut names.scopes, id, n));
        load_table(dirs, "rt_realms", |id, n| set(&mut names.realms, id, n));
        load_table(dirs, "rt_dsfield", |id, n| set(&mut names.dsfields, id, n));
        let mut add_table = |id: u32, name: String| {
            names.table_ids.insert(name.clone(), id);
            names.tables.insert(id, name);
        };
        load_table(dirs, "rt_tables", &mut add_table);
        load_dir(dirs, "rt_tables.d", &mut add_table);
        load_table(dirs, "group", |id, n| {
            names.groups.insert(id, n);
        });
        names
    }

    /// iproute2's compiled-in names (lib/rt_names.c).
    pub fn builtin() -> Names {
        let mut protocols = vec![None; 256];
        for (id, name) in [
            (0, "unspec"),
            (1, "redirect"),
            (2, "kernel"),
            (3, "boot"),
            (4, "static"),
            (8, "gated"),
            (9, "ra"),
            (10, "mrt"),
            (11, "zebra"),
            (12, "bird"),
            (13, "dnrouted"),
            (14, "xorp"),
            (15, "ntk"),
            (16, "dhcp"),
            (18, "keepalived"),
            (42, "babel"),
            (186, "bgp"),
            (187, "isis"),
            (188, "ospf"),
            (189, "rip"),
            (192, "eigrp"),
        ] {
            protocols[id] = Some(name.to_string());
        }
        let mut scopes = vec![None; 256];
        for (id, name) in [
            (0, "global"),
            (200, "site"),
            (253, "link"),
            (254, "host"),
            (255, "nowhere"),
        ] {
            scopes[id] = Some(name.to_string());
        }
        let mut realms = vec![None; 256];
        realms[0] = Some("unknown".to_string());
        let mut dsfields = vec![None; 256];
        dsfields[0] = Some("0".to_string());
        let tables: HashMap<u32, String> = [(253, "default"), (254, "main"), (255, "local")]
            .into_iter()
            .map(|(id, name)| (id, name.to_string()))
            .collect();
        let table_ids = tables.iter().map(|(id, n)| (n.clone(), *id)).collect();
        Names {
            protocols,
            scopes,
            realms,
            dsfields,
            tables,
            table_ids,
            groups: HashMap::new(),
        }
    }

    pub fn protocol(&self, id: u8) -> NameOr<'_> {
        NameOr::from(self.protocols[id as usize].as_deref(), id as u32)
    }

    pub fn scope(&self, id: u8) -> NameOr<'_> {
        NameOr::from(self.scopes[id as usize].as_deref(), id as u32)
    }

    pub fn realm(&self, id: u32) -> NameOr<'_> {
        let name = self.realms.get(id as usize).and_then(|n| n.as_deref());
        NameOr::from(name, id)
    }

    pub fn table(&self, id: u32) -> NameOr<'_> {
        NameOr::from(self.tables.get(&id).map(String::as_str), id)
    }

    /// A device group as rtnl_group_n2a prints it: a name from `group`, else the number
    /// as a signed int (iproute2 keeps groups in an int).
    pub fn group(&self, id: u32) -> String {
        match self.groups.get(&id) {
            Some(name) => name.clone(),
            None => (id as i32).to_string(),
        }
    }

    /// Looks a table up by name or number, as `ip route show table X` accepts it.
    pub fn table_id(&self, text: &str) -> Option<u32> {
        if let Some(id) = self.table_ids.get(text) {
            return Some(*id);
        }
        parse_c_number(text)
    }

    /// A protocol by name (rt_protos) or number, as `ip route add ... proto X` takes it.
    /// `machnet` is understood even where no rt_protos.d file names it (the file makes
    /// `ip` print the name; input needs no file), unless a file gives the name away.
    pub fn protocol_id(&self, text: &str) -> Option<u8> {
        lookup_slot(&self.protocols, text).or(match text {
            "machnet" => Some(MACHNET_PROTOCOL),
            _ => None,
        })
    }

    pub fn scope_id(&self, text: &str) -> Option<u8> {
        lookup_slot(&self.scopes, text)
    }

    pub fn realm_id(&self, text: &str) -> Option<u32> {
        lookup_slot(&self.realms, text).map(u32::from)
    }

    /// A TOS / DS field as iproute2's rtnl_dsfield_a2n reads it: a name from rt_dsfield,
    /// else a number in *hex* (with or without 0x), at most 0xff.
    pub fn dsfield_id(&self, text: &str) -> Option<u8> {
        if let Some(id) = self
            .dsfields
            .iter()
            .position(|n| n.as_deref() == Some(text))
        {
            return u8::try_from(id).ok();
        }
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        u8::from_str_radix(hex, 16).ok()
    }

    /// TOS / DS field: a name from rt_dsfield, else 0x%02x.
    pub fn dsfield(&self, id: u8) -> String {
        match &self.dsfields[id as usize] {
            Some(name) => name.clone(),
            None => format!("0x{id:02x}"),
        }
    }
}

/// A name from a database, or the number printed in decimal when there is none.
#[derive(Debug, Clone, Copy)]
pub enum NameOr<'a> {
    Name(&'a str),
    Number(u32),
}

impl<'a> NameOr<'a> {
    fn from(name: Option<&'a str>, id: u32) -> NameOr<'a> {
        name.map_or(NameOr::Number(id), NameOr::Name)
    }
}

impl std::fmt::Display for NameOr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameOr::Name(n) => f.write_str(n),
            NameOr::Number(id) => write!(f, "{id}"),
        }
    }
}

/// iproute2's route type names (ip/rtm_map.c).
pub fn route_type(kind: u8) -> NameOr<'static> {
    let name = match kind {
        0 => "none",
        1 => "unicast",
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        10 => "nat",
        11 => "xresolve",
        _ => return NameOr::Number(kind as u32),
    };
    NameOr::Name(name)
}

/// A name from a 256-slot table, or a number up to 255.
fn lookup_slot(slots: &[Option<String>], text: &str) -> Option<u8> {
    if let Some(id) = slots.iter().position(|n| n.as_deref() == Some(text)) {
        return u8::try_from(id).ok();
    }
    parse_c_number(text).and_then(|n| u8::try_from(n).ok())
}

fn set(slots: &mut [Option<String>], id: u32, name: String) {
    if let Some(slot) = slots.get_mut(id as usize) {
        *slot = Some(name);
    }
}

/// Reads the first of `dirs/file` that exists (an /etc file replaces the vendor one).
fn load_table(dirs: &[PathBuf], file: &str, mut add: impl FnMut(u32, String)) {
    if let Some(text) = dirs
        .iter()
        .find_map(|dir| std::fs::read_to_string(dir.join(file)).ok())
    {
        parse_db(&text, &mut add);
    }
}

/// Reads every `*.conf` in `dirs/sub`, vendor directories first so /etc wins.
fn load_dir(dirs: &[PathBuf], sub: &str, mut add: impl FnMut(u32, String)) {
    for dir in dirs.iter().rev() {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir.join(sub)) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => continue,
        };
        files.retain(|p| is_conf(p));
        files.sort();
        for path in files {
            if let Ok(text) = std::fs::read_to_string(&path) {
                parse_db(&text, &mut add);
            }
        }
    }
}

fn is_conf(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.len() > 5 && name.ends_with(".conf")
}

/// One `ID NAME` pair a line, `#` comments, ids in decimal or 0x hex. A line that is not
/// such a pair ends the file, as in iproute2 (which says "Database … is corrupted").
pub fn parse_db(text: &str, add: &mut impl FnMut(u32, String)) {
    for line in text.lines() {
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(id), Some(name)) = (words.next(), words.next()) else {
            return;
        };
        let id = match id.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => id.parse::<i64>().ok().and_then(|v| u32::try_from(v).ok()),
        };
        match id {
            Some(id) => add(id, name.to_string()),
            None => return,
        }
    }
}

/// strtoul(text, 0): decimal, 0x hex or 0 octal.
pub fn parse_c_number(text: &str) -> Option<u32> {
    // strtoul takes a sign before the base prefix, and only digits after it.
    let text = text.strip_prefix('+').unwrap_or(text);
    let (radix, digits) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (16, hex)
        } else if text.len() > 1 && text.starts_with('0') {
            (8, &text[1..])
        } else {
            (10, text)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C's strtoul with base 0, on a whole word.
    #[test]
    fn c_numbers_as_strtoul_reads_them() {
        for (text, n) in [
            ("10", 10),
            ("0x1F", 31),
            ("0X10", 16),
            ("010", 8),
            ("0", 0),
            ("+7", 7),
            ("+0x10", 16),
        ] {
            assert_eq!(parse_c_number(text), Some(n), "{text}");
        }
        for bad in [
            "",
            "0x",
            "08",
            "0x+a",
            "0+7",
            "-1",
            "1a",
            "++1",
            "4294967296",
        ] {
            assert_eq!(parse_c_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn files_add_and_override_names() {
        let dir = std::env::temp_dir().join(format!("machnet-names-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rt_protos.d")).unwrap();
        std::fs::write(
            dir.join("rt_protos"),
            "# c\n4 mystatic\n0x6d\tmachnet # trailing\n",
        )
        .unwrap();
        std::fs::write(dir.join("rt_protos.d/x.conf"), "200 two-hundred\n").unwrap();
        std::fs::write(dir.join("rt_protos.d/ignored"), "201 nope\n").unwrap();
        std::fs::write(dir.join("rt_tables"), "100 vpn\n").unwrap();
        std::fs::create_dir_all(dir.join("rt_tables.d")).unwrap();
        std::fs::write(dir.join("rt_tables.d/more.conf"), "100 vpnd\n").unwrap();
        let names = Names::load_from(std::slice::from_ref(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names.protocol(109).to_string(), "machnet");
        assert_eq!(names.protocol(4).to_string(), "mystatic");
        assert_eq!(names.protocol(200).to_string(), "two-hundred");
        assert_eq!(names.protocol(201).to_string(), "201");
        assert_eq!(names.protocol(2).to_string(), "kernel");
        assert_eq!(
            names.table(100).to_string(),
            "vpnd",
            "the last name loaded prints"
        );
        assert_eq!(names.table_id("vpnd"), Some(100));
        assert_eq!(names.table(4294967290).to_string(), "4294967290");
        assert_eq!(names.table_id("vpn"), Some(100));
        assert_eq!(names.table_id("main"), Some(254));
        assert_eq!(names.table_id("0x10"), Some(16));
        assert_eq!(names.table_id("nope"), None);
        assert_eq!(names.group(5).to_string(), "5");
    }

    #[test]
    fn dsfield_falls_back_to_hex() {
        assert_eq!(Names::builtin().dsfield(0x10), "0x10");
    }
}
