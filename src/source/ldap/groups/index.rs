//! The listing indexed by member, for a listing that serves run after run (a
//! daemon's): the groups of the few users a change read delivers are then
//! looked up, instead of found by reading every member of every group, which
//! takes 1.7-3 ms at 100,000 users (docs/performance.md).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

use super::GroupListing;
use crate::model::HashBuckets;

/// Each member of each group, as the hash of its packed key and the group's
/// number, sorted, and bucketed by hash. Two keys may share a hash, so a lookup
/// checks each group found against its members: the index never adds a
/// membership.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberIndex {
    pairs: Vec<(u64, u32)>,
    buckets: HashBuckets,
    /// The groups' DN keys by number, and their numbers; a group deleted keeps
    /// its number.
    dns: Vec<String>,
    numbers: FxHashMap<String, u32>,
}

impl MemberIndex {
    pub fn of(listing: &GroupListing) -> Self {
        let mut index = Self::default();
        for dn in listing.groups.keys() {
            index.add_group(listing, dn);
        }
        index.sort();
        index
    }

    /// Brings the index up to date with the groups named by `dns` (changed,
    /// added or deleted) as `listing` now has them.
    pub fn regroup(&mut self, listing: &GroupListing, dns: &BTreeSet<String>) {
        if dns.is_empty() {
            return;
        }
        let numbers: FxHashSet<u32> = dns
            .iter()
            .filter_map(|dn| self.numbers.get(dn))
            .copied()
            .collect();
        self.pairs.retain(|(_, number)| !numbers.contains(number));
        for dn in dns {
            self.add_group(listing, dn);
        }
        self.sort();
    }

    fn sort(&mut self) {
        self.pairs.sort_unstable();
        let pairs = &self.pairs;
        self.buckets = HashBuckets::of_sorted(pairs.len(), |at| pairs[at].0);
    }

    fn add_group(&mut self, listing: &GroupListing, dn: &str) {
        let Some(group) = listing.groups.get(dn) else {
            return;
        };
        let dns = &mut self.dns;
        let number = *self.numbers.entry(dn.to_owned()).or_insert_with(|| {
            dns.push(dn.to_owned());
            (dns.len() - 1) as u32
        });
        let members = group.members.packed().map(|member| (hash(member), number));
        self.pairs.extend(members);
    }

    /// The DN keys of the groups that list the `packed` key themselves.
    pub fn groups_of<'a>(&'a self, listing: &'a GroupListing, packed: &str) -> Vec<&'a str> {
        let hash = hash(packed);
        self.pairs[self.buckets.candidates(hash)]
            .iter()
            .filter(|(h, _)| *h == hash)
            .map(|(_, number)| self.dns[*number as usize].as_str())
            .filter(|dn| {
                let group = listing.groups.get(*dn);
                group.is_some_and(|g| g.members.contains(packed))
            })
            .collect()
    }
}

fn hash(packed: &str) -> u64 {
    let mut hasher = FxHasher::default();
    packed.hash(&mut hasher);
    hasher.finish()
}
