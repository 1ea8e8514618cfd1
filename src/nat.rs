//! Which source addresses the host masquerades, from its nftables ruleset (`nft -j list
//! ruleset`, read once by crate::why::firewall; iptables-nft rules show up there too).
//! Only what the NAT audit rule needs: the source prefix of each masquerade/snat rule.

use std::net::IpAddr;

use serde_json::Value;

use crate::survey::Masquerade;

/// The masquerade (or snat) rules of a ruleset. A rule's source prefix is its `ip saddr ==
/// PREFIX` match; a rule without one, or with a source match this cannot read (a set, a
/// negation), counts as covering every source, so an unreadable rule never makes a
/// false finding.
pub fn parse_ruleset(ruleset: &Value) -> Vec<Masquerade> {
    let Some(items) = ruleset.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    masquerades(items)
}

/// The same, over the items of `nft -j list ruleset`'s "nftables" array.
pub fn masquerades(items: &[Value]) -> Vec<Masquerade> {
    items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter_map(|rule| rule.get("expr").and_then(Value::as_array))
        .filter(|exprs| {
            exprs
                .iter()
                .any(|e| e.get("masquerade").is_some() || e.get("snat").is_some())
        })
        .map(|exprs| Masquerade {
            source: exprs.iter().find_map(source_match).flatten(),
        })
        .collect()
}

/// For a `match` on the IPv4/IPv6 source address: Some(prefix) when readable, Some(None)
/// when not (treated as every source); None for any other expression.
fn source_match(expr: &Value) -> Option<Option<(IpAddr, u8)>> {
    let m = expr.get("match")?;
    let field = m.get("left")?.get("payload")?;
    if field.get("field")?.as_str()? != "saddr" {
        return None;
    }
    if m.get("op")
        .and_then(Value::as_str)
        .is_some_and(|op| op != "==")
    {
        return Some(None);
    }
    let right = m.get("right")?;
    Some(match right {
        Value::String(addr) => addr.parse::<IpAddr>().ok().map(|a| (a, host_len(a))),
        Value::Object(o) => o.get("prefix").and_then(|p| {
            let addr = p.get("addr")?.as_str()?.parse().ok()?;
            let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
            Some((addr, len))
        }),
        _ => None,
    })
}

fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_rules_and_their_sources() {
        let ruleset: Value = serde_json::from_str(
            r#"{"nftables": [
              {"metainfo": {"version": "1.0.6"}},
              {"rule": {"family": "ip", "table": "nat", "chain": "post", "handle": 3, "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                           "right": {"prefix": {"addr": "10.77.0.0", "len": 16}}}},
                {"masquerade": null}]}},
              {"rule": {"family": "ip", "table": "nat", "chain": "post", "handle": 4, "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}},
                {"masquerade": null}]}},
              {"rule": {"family": "ip", "table": "filter", "chain": "fwd", "handle": 5, "expr": [
                {"accept": null}]}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            parse_ruleset(&ruleset),
            vec![
                Masquerade {
                    source: Some(("10.77.0.0".parse().unwrap(), 16))
                },
                Masquerade { source: None },
            ]
        );
    }
}
