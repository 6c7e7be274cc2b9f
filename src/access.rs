//! Who may connect: allow and deny rules over addresses and CIDR blocks. A leaf: it knows
//! nothing of sockets.

use std::fmt;
use std::net::IpAddr;

/// An address block: an IPv4 or IPv6 address and how many of its leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    address: IpAddr,
    prefix: u8,
}

impl Block {
    /// Parses `10.0.0.0/8`, `::1`, `fe80::/10` or `192.0.2.7` (a single address is a block of
    /// one). An IPv4-mapped IPv6 address is read as its IPv4 address.
    pub fn parse(spec: &str) -> Result<Block, String> {
        let spec = spec.trim();
        let (address, prefix) = match spec.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (spec, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("'{spec}' is not an IPv4 or IPv6 address or CIDR block"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits && prefix.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("'{spec}': the prefix length must be a number from 0 to {bits}")
                })?,
        };
        // A block within ::ffff:0:0/96 is a block of IPv4 addresses, as clients are judged.
        let (address, prefix) = match address {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (address, prefix),
            },
            _ => (address, prefix),
        };
        Ok(Block {
            address: network(address, prefix),
            prefix,
        })
    }

    /// True when the two blocks share an address.
    pub fn overlaps(&self, other: &Block) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if self.prefix <= other.prefix {
            other
        } else {
            self
        };
        shorter.contains(longer.address)
    }

    /// True when `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(block), IpAddr::V4(ip)) => {
                same_prefix(&block.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(block), IpAddr::V6(ip)) => {
                same_prefix(&block.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = if self.address.is_ipv4() { 32 } else { 128 };
        if self.prefix == bits {
            write!(f, "{}", self.address)
        } else {
            write!(f, "{}/{}", self.address, self.prefix)
        }
    }
}

/// `address` with the bits after the first `prefix` cleared, so that `10.1.2.3/8` and
/// `10.0.0.0/8` are one block.
fn network(address: IpAddr, prefix: u8) -> IpAddr {
    fn clear<const N: usize>(mut octets: [u8; N], prefix: u8) -> [u8; N] {
        for (i, octet) in octets.iter_mut().enumerate() {
            let kept = usize::from(prefix).saturating_sub(i * 8).min(8) as u32;
            *octet &= !0xffu8.checked_shr(kept).unwrap_or(0);
        }
        octets
    }
    match address {
        IpAddr::V4(v4) => IpAddr::V4(clear(v4.octets(), prefix).into()),
        IpAddr::V6(v6) => IpAddr::V6(clear(v6.octets(), prefix).into()),
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) as the IPv4 address it stands for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True when the first `prefix` bits of `a` and `b` are equal.
fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// The rules: deny wins over allow, and with any allow rule everything else is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Blocks allowed in; empty: everyone not denied.
    pub allow: Vec<Block>,
    /// Blocks kept out, whatever the allow rules say.
    pub deny: Vec<Block>,
}

impl Rules {
    /// True when `ip` may connect.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|block| block.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|block| block.contains(ip))
    }

    /// The rules as `/list` shows them.
    pub fn describe(&self) -> String {
        let list = |blocks: &[Block]| {
            blocks
                .iter()
                .map(Block::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.allow.is_empty(), self.deny.is_empty()) {
            (true, true) => "Access: everyone may connect.".to_string(),
            (true, false) => format!("Access: everyone but {}.", list(&self.deny)),
            (false, true) => format!("Access: only {}.", list(&self.allow)),
            (false, false) => format!(
                "Access: only {}, but never {}.",
                list(&self.allow),
                list(&self.deny)
            ),
        }
    }
}

/// The blocks of a rules file: one SPEC a line; blank lines and `#` comments are skipped. An
/// error names the line.
pub fn parse_file(text: &str) -> Result<Vec<Block>, String> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let spec = line.split('#').next().unwrap_or("").trim();
            (!spec.is_empty())
                .then(|| Block::parse(spec).map_err(|why| format!("line {}: {why}", index + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        let blocks = |specs: &[&str]| specs.iter().map(|s| Block::parse(s).unwrap()).collect();
        Rules {
            allow: blocks(allow),
            deny: blocks(deny),
        }
    }

    #[test]
    fn addresses_and_blocks_of_both_families_match_as_written() {
        let r = rules(&["10.0.0.0/8", "192.0.2.7", "fe80::/10", "::1"], &[]);
        assert!(r.permits(ip("10.200.3.4")));
        assert!(!r.permits(ip("11.0.0.1")));
        assert!(r.permits(ip("192.0.2.7")));
        assert!(!r.permits(ip("192.0.2.8")));
        assert!(r.permits(ip("fe80::1234")));
        assert!(r.permits(ip("febf::1")));
        assert!(!r.permits(ip("fec0::1")));
        assert!(r.permits(ip("::1")));
        assert!(!r.permits(ip("::2")));
        // An odd prefix length looks at the bits, not the bytes.
        let r = rules(&["172.16.0.0/12"], &[]);
        assert!(r.permits(ip("172.31.255.255")));
        assert!(!r.permits(ip("172.32.0.0")));
    }

    #[test]
    fn mapped_addresses_follow_the_ipv4_rules_and_deny_wins() {
        let r = rules(&["10.0.0.0/8"], &["10.1.2.3"]);
        assert!(r.permits(ip("::ffff:10.9.9.9")));
        assert!(!r.permits(ip("::ffff:10.1.2.3")));
        assert!(!r.permits(ip("10.1.2.3")));
        let r = rules(&["::ffff:127.0.0.1"], &[]);
        assert!(r.permits(ip("127.0.0.1")));
        // No rules: everyone; deny only: everyone else.
        assert!(Rules::default().permits(ip("203.0.113.1")));
        assert!(rules(&[], &["0.0.0.0/0"]).permits(ip("::1")));
        assert!(!rules(&[], &["0.0.0.0/0"]).permits(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_blocks_are_ipv4_blocks_and_host_bits_do_not_matter() {
        assert_eq!(
            Block::parse("::ffff:10.0.0.0/104").unwrap(),
            Block::parse("10.0.0.0/8").unwrap()
        );
        assert_eq!(
            Block::parse("::ffff:10.1.2.3/128").unwrap(),
            Block::parse("10.1.2.3").unwrap()
        );
        assert!(
            Block::parse("::ffff:0:0/96")
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
        assert_eq!(
            Block::parse("10.1.2.3/8").unwrap(),
            Block::parse("10.0.0.0/8").unwrap()
        );
        assert_eq!(
            Block::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn bad_specs_and_bad_file_lines_are_named() {
        for bad in [
            "1.2.3.4/+8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host.example",
            "1.2.3.4/x",
            "",
        ] {
            assert!(Block::parse(bad).is_err(), "{bad:?}");
        }
        let file = "# office\n10.0.0.0/8  # everyone there\n\n192.0.2.300\n";
        let err = parse_file(file).unwrap_err();
        assert!(err.starts_with("line 4: '192.0.2.300'"), "{err}");
        assert_eq!(
            parse_file("# office\n10.0.0.0/8 # all\n::1\n").unwrap(),
            [
                Block::parse("10.0.0.0/8").unwrap(),
                Block::parse("::1").unwrap()
            ]
        );
    }
}
