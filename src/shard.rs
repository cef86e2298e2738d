//! Sharding a fleet across exporters: which targets this exporter polls.
//!
//! With `--total-shards N`, exporter `--shard I` polls the targets whose *rendezvous* (highest
//! random weight) winner is I: each target scores every shard with a hash of (target name,
//! shard) and goes to the highest score. So N exporters cover every target exactly once, each
//! decides alone (no coordination, no shared state), and going from N to N+1 shards moves
//! only the targets the new shard wins, about 1/(N+1) of them; the others keep their shard,
//! their connections and their series. A modulo of the hash would move almost all of them.
//!
//! The hash must give the same answer in every build and on every machine, forever: a change
//! would reshuffle every fleet on upgrade. std's `DefaultHasher` promises neither, so the
//! hash is written here: 64-bit FNV-1a over the bytes, finished with the splitmix64 mixer
//! (FNV alone spreads short, similar names poorly). Both are public-domain, fixed algorithms
//! of a few lines; a crate would add a dependency for less than this file.

use std::fmt;

/// This exporter's share of the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: u32,
    pub total: u32,
}

impl Default for Shard {
    /// One exporter polls everything.
    fn default() -> Shard {
        Shard { index: 0, total: 1 }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.index, self.total)
    }
}

impl Shard {
    /// Checks `--shard` against `--total-shards`.
    pub fn new(index: u32, total: u32) -> Result<Shard, String> {
        if total == 0 {
            return Err("--total-shards must be at least 1".to_string());
        }
        if index >= total {
            return Err(format!(
                "--shard {index} is out of range: shards are numbered 0 to {} with --total-shards {total}",
                total - 1
            ));
        }
        Ok(Shard { index, total })
    }

    /// The shard from a StatefulSet pod's hostname, `<set name>-<ordinal>`.
    pub fn from_hostname(hostname: &str, total: u32) -> Result<Shard, String> {
        let ordinal = hostname
            .rsplit_once('-')
            .and_then(|(_, tail)| tail.parse::<u32>().ok())
            .ok_or_else(|| {
                format!(
                    "--shard-from-hostname: hostname \"{hostname}\" does not end in -<number> \
                     (a StatefulSet pod is named <set>-<ordinal>); use --shard instead"
                )
            })?;
        Shard::new(ordinal, total).map_err(|e| {
            format!("--shard-from-hostname: hostname \"{hostname}\" gives shard {ordinal}: {e}; raise --total-shards to the StatefulSet's replicas")
        })
    }

    /// True when this exporter polls the target `name`.
    pub fn owns(&self, name: &str) -> bool {
        self.total <= 1 || owner(name, self.total) == self.index
    }
}

/// The shard (of `total`) a target belongs to: the one with the highest score.
pub fn owner(name: &str, total: u32) -> u32 {
    (0..total)
        .max_by_key(|&shard| (score(name, shard), shard))
        .unwrap_or(0)
}

fn score(name: &str, shard: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain([0xff]).chain(shard.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(hash)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("db-{i:03}")).collect()
    }

    #[test]
    fn every_target_has_exactly_one_shard() {
        for total in 1..=8 {
            for name in names(200) {
                let owners = (0..total)
                    .filter(|&i| Shard::new(i, total).unwrap().owns(&name))
                    .count();
                assert_eq!(owners, 1, "{name} with {total} shards");
            }
        }
    }

    #[test]
    fn shards_are_balanced_and_growing_moves_only_the_new_shards_share() {
        let all = names(1000);
        let mut sizes = [0usize; 4];
        for name in &all {
            sizes[owner(name, 4) as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| (200..=300).contains(&n)), "{sizes:?}");
        let moved: Vec<&String> = all.iter().filter(|n| owner(n, 3) != owner(n, 4)).collect();
        assert!(
            moved.iter().all(|n| owner(n, 4) == 3),
            "a target only ever moves to the new shard"
        );
        assert!((200..=300).contains(&moved.len()), "{} moved", moved.len());
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Changing these changes which exporter polls what in every sharded fleet.
        let fixed: Vec<u32> = ["a", "b", "primary", "db-042"]
            .iter()
            .map(|n| owner(n, 5))
            .collect();
        assert_eq!(fixed, FIXED);
    }

    const FIXED: [u32; 4] = [0, 4, 3, 0];

    #[test]
    fn shard_from_a_statefulset_hostname() {
        assert_eq!(
            Shard::from_hostname("pgkpi-2", 3).unwrap(),
            Shard { index: 2, total: 3 }
        );
        assert_eq!(
            Shard::from_hostname("my-pgkpi-set-10", 11).unwrap().index,
            10
        );
        let none = Shard::from_hostname("pgkpi", 3).unwrap_err();
        assert!(none.contains("does not end in -<number>"), "{none}");
        let over = Shard::from_hostname("pgkpi-3", 3).unwrap_err();
        assert!(over.contains("raise --total-shards"), "{over}");
        assert!(Shard::new(0, 0).is_err());
    }
}
