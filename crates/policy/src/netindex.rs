//! Which network zones contain an IP: every CIDR of every zone flattened once, at compile
//! time, into sorted disjoint address intervals, each carrying the set of zones that
//! contain it. A lookup is one binary search and returns a borrowed, sorted zone list.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

/// A zone's index in the compiled set.
pub type ZoneId = u16;

/// Address intervals of one family and the zones containing each.
#[derive(Debug, Default)]
struct FamilyTable {
    /// Interval start addresses, ascending; the first is always 0.
    starts: Vec<u128>,
    /// For each interval, an index into `NetworkIndex::sets`.
    set_of: Vec<u32>,
}

/// The compiled network zones.
#[derive(Debug)]
pub struct NetworkIndex {
    v4: FamilyTable,
    v6: FamilyTable,
    sets: Vec<Box<[ZoneId]>>,
}

impl NetworkIndex {
    /// Builds the index from (zone, CIDR) pairs.
    pub fn build(entries: &[(ZoneId, IpNet)]) -> Self {
        let mut sets: Vec<Box<[ZoneId]>> = vec![Box::new([])];
        let mut set_ids: HashMap<Box<[ZoneId]>, u32> = HashMap::new();
        set_ids.insert(Box::new([]), 0);
        let mut intern = |set: Vec<ZoneId>| -> u32 {
            let set: Box<[ZoneId]> = set.into();
            if let Some(&id) = set_ids.get(&set) {
                return id;
            }
            let id = sets.len() as u32;
            sets.push(set.clone());
            set_ids.insert(set, id);
            id
        };
        let v4: Vec<_> = entries
            .iter()
            .filter_map(|(z, n)| match n {
                IpNet::V4(n) => Some((
                    *z,
                    u32::from(n.network()) as u128,
                    u32::from(n.broadcast()) as u128,
                )),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6: Vec<_> = entries
            .iter()
            .filter_map(|(z, n)| match n {
                IpNet::V6(n) => Some((*z, u128::from(n.network()), u128::from(n.broadcast()))),
                IpNet::V4(_) => None,
            })
            .collect();
        let v4 = sweep(&v4, &mut intern);
        let v6 = sweep(&v6, &mut intern);
        NetworkIndex { v4, v6, sets }
    }

    /// The zones containing `ip`, sorted ascending. IPv4-mapped IPv6 addresses are looked
    /// up as IPv4.
    pub fn zones_of(&self, ip: IpAddr) -> &[ZoneId] {
        let (table, addr) = match ip {
            IpAddr::V4(a) => (&self.v4, u32::from(a) as u128),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => (&self.v4, u32::from(v4) as u128),
                None => (&self.v6, u128::from(a)),
            },
        };
        let i = table.starts.partition_point(|&s| s <= addr);
        if i == 0 {
            return &[];
        }
        &self.sets[table.set_of[i - 1] as usize]
    }
}

/// Sweeps inclusive ranges into disjoint intervals with their zone sets.
fn sweep(
    ranges: &[(ZoneId, u128, u128)],
    intern: &mut impl FnMut(Vec<ZoneId>) -> u32,
) -> FamilyTable {
    // Events at each boundary: +zone at start, -zone just after end (None = past the top).
    let mut events: BTreeMap<u128, Vec<(ZoneId, i32)>> = BTreeMap::new();
    events.entry(0).or_default();
    for &(z, lo, hi) in ranges {
        events.entry(lo).or_default().push((z, 1));
        if let Some(after) = hi.checked_add(1) {
            events.entry(after).or_default().push((z, -1));
        }
    }
    let mut active: BTreeMap<ZoneId, i32> = BTreeMap::new();
    let mut table = FamilyTable::default();
    for (pos, evs) in events {
        for (z, d) in evs {
            let c = active.entry(z).or_insert(0);
            *c += d;
            if *c == 0 {
                active.remove(&z);
            }
        }
        let set = intern(active.keys().copied().collect());
        // Merge equal neighbours so the table stays small.
        if table.set_of.last() == Some(&set) {
            continue;
        }
        table.starts.push(pos);
        table.set_of.push(set);
    }
    table
}

/// Whether two ascending zone lists share a zone.
pub fn intersects(a: &[ZoneId], b: &[ZoneId]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn nested_and_overlapping_zones() {
        let idx = NetworkIndex::build(&[
            (0, net("10.0.0.0/8")),
            (1, net("10.1.0.0/16")),
            (2, net("192.0.2.0/24")),
            (3, net("2001:db8::/32")),
            (1, net("0.0.0.0/0")),
        ]);
        assert_eq!(idx.zones_of("10.1.2.3".parse().unwrap()), &[0, 1]);
        assert_eq!(idx.zones_of("10.2.0.1".parse().unwrap()), &[0, 1]);
        assert_eq!(idx.zones_of("192.0.2.7".parse().unwrap()), &[1, 2]);
        assert_eq!(idx.zones_of("8.8.8.8".parse().unwrap()), &[1]);
        assert_eq!(idx.zones_of("2001:db8::1".parse().unwrap()), &[3]);
        assert_eq!(
            idx.zones_of("2001:db9::1".parse().unwrap()),
            &[] as &[ZoneId]
        );
        assert_eq!(idx.zones_of("::ffff:192.0.2.7".parse().unwrap()), &[1, 2]);
        assert_eq!(idx.zones_of("255.255.255.255".parse().unwrap()), &[1]);
    }

    #[test]
    fn empty_index_contains_nothing() {
        let idx = NetworkIndex::build(&[]);
        assert!(idx.zones_of("10.0.0.1".parse().unwrap()).is_empty());
        assert!(idx.zones_of("::1".parse().unwrap()).is_empty());
    }

    fn v4net() -> impl Strategy<Value = IpNet> {
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
            IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(a), l)
                    .unwrap()
                    .trunc(),
            )
        })
    }

    proptest! {
        // The interval table agrees with checking every CIDR one by one.
        #[test]
        fn agrees_with_naive_containment(
            nets in proptest::collection::vec((0u16..6, v4net()), 0..25),
            probes in proptest::collection::vec(any::<u32>(), 1..40),
        ) {
            let idx = NetworkIndex::build(&nets);
            let mut probe_ips: Vec<std::net::Ipv4Addr> = probes.into_iter().map(Into::into).collect();
            // Also probe each network's first and last address.
            for (_, n) in &nets {
                if let IpNet::V4(n) = n { probe_ips.push(n.network()); probe_ips.push(n.broadcast()); }
            }
            for ip in probe_ips {
                let mut naive: Vec<ZoneId> = nets.iter().filter(|(_, n)| n.contains(&IpAddr::V4(ip))).map(|(z, _)| *z).collect();
                naive.sort_unstable();
                naive.dedup();
                prop_assert_eq!(idx.zones_of(IpAddr::V4(ip)), naive.as_slice());
            }
        }
    }
}
