//! Scale-out past one control host: `--shard K/N` gives each daemon the servers whose
//! stable name hash falls in shard K of N (0-based), over the same GitOps checkout.
//! The hash depends on the name alone, so adding or removing a server never moves
//! another one between shards; only changing N does.

use std::fmt;
use std::str::FromStr;

/// One shard of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl Shard {
    /// The single shard that holds everything.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether `server` belongs to this shard.
    pub fn owns(&self, server: &str) -> bool {
        self.count <= 1 || stable_hash(server) % u64::from(self.count) == u64::from(self.index)
    }

    /// A file-name-safe tag (`0-of-3`) for per-shard lock files.
    pub fn tag(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

/// FNV-1a (64 bit): stable across processes, machines and Rust versions, unlike std's
/// randomly keyed hasher.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a shard such as 0/3 (shard K of N, K from 0 to N-1)");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_shards_partition_an_inventory_exactly() {
        let names: Vec<String> = (0..3000).map(|i| format!("srv-{i:04}")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let mut sizes = [0usize; 3];
        for name in &names {
            let owners: Vec<usize> = (0..3).filter(|i| shards[*i].owns(name)).collect();
            assert_eq!(owners.len(), 1, "{name} is owned by {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|s| *s > 800), "balanced enough: {sizes:?}");
    }

    #[test]
    fn adding_a_server_moves_no_other_server() {
        let shard: Shard = "1/3".parse().unwrap();
        let before: Vec<bool> = (0..500).map(|i| shard.owns(&format!("web-{i}"))).collect();
        // The owner depends only on the name: a new name changes nothing for the others.
        let _new = shard.owns("web-new");
        let after: Vec<bool> = (0..500).map(|i| shard.owns(&format!("web-{i}"))).collect();
        assert_eq!(before, after);
        // The published FNV-1a test vector: the assignment never changes across versions.
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn shards_are_parsed_and_checked() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { index: 2, count: 3 });
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert!(Shard::ALL.owns("anything"));
    }
}
