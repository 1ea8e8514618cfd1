//! IP protocol numbers and names as glibc's getprotobyname/getprotobynumber find them:
//! in /etc/protocols (`name number aliases…`, `#` comments). iproute2 reads `ipproto`
//! words with the one and prints FRA_IP_PROTO with the other.

use std::sync::OnceLock;

/// /etc/protocols, read once per process (a query file may name a protocol every line).
fn table() -> Option<&'static str> {
    static PROTOCOLS: OnceLock<Option<String>> = OnceLock::new();
    PROTOCOLS
        .get_or_init(|| std::fs::read_to_string("/etc/protocols").ok())
        .as_deref()
}

/// inet_proto_a2n: a decimal number, or a name or alias from /etc/protocols.
pub fn number(word: &str) -> Option<u8> {
    if let Ok(number) = word.parse::<u8>() {
        return Some(number);
    }
    number_in(table()?, word)
}

/// inet_proto_n2a: the first name /etc/protocols gives the number, else `ipproto-N`.
pub fn name(number: u8) -> String {
    table()
        .and_then(|t| name_in(t, number))
        .map_or_else(|| format!("ipproto-{number}"), str::to_string)
}

fn entries(table: &str) -> impl Iterator<Item = (u8, &str, std::str::SplitWhitespace<'_>)> {
    table.lines().filter_map(|line| {
        let mut fields = line.split('#').next()?.split_whitespace();
        let name = fields.next()?;
        let number = fields.next()?.parse::<u8>().ok()?;
        Some((number, name, fields))
    })
}

fn number_in(table: &str, word: &str) -> Option<u8> {
    entries(table).find_map(|(number, name, mut aliases)| {
        (name == word || aliases.any(|alias| alias == word)).then_some(number)
    })
}

fn name_in(table: &str, number: u8) -> Option<&str> {
    entries(table).find_map(|(n, name, _)| (n == number).then_some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "# comment\nip\t0\tIP\t\t# internet protocol\ntcp\t6\tTCP\nudp 17 UDP\n";

    #[test]
    fn both_directions() {
        assert_eq!(number_in(TABLE, "tcp"), Some(6));
        assert_eq!(number_in(TABLE, "UDP"), Some(17));
        assert_eq!(number_in(TABLE, "sctp"), None);
        assert_eq!(name_in(TABLE, 0), Some("ip"));
        assert_eq!(name_in(TABLE, 17), Some("udp"));
        assert_eq!(name_in(TABLE, 132), None);
    }
}
