//! The e-mail addresses of the active users planned so far, to find those two
//! subjects share once the read is complete.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use crate::model::Email;

/// E-mail addresses back to back in one buffer, each known by its position (the
/// order it was added in). No allocation per address (see docs/performance.md).
#[derive(Default)]
pub(super) struct EmailsSeen {
    text: String,
    /// Where each address ends in `text`, as a `u32` to halve the list.
    ends: Vec<u32>,
}

impl EmailsSeen {
    /// Adds an address; returns its position.
    // The ends are 4 bytes to halve the list; more than 4 GiB of addresses (a
    // hundred million users) is beyond any directory this is built for.
    #[allow(clippy::expect_used)]
    pub(super) fn add(&mut self, email: &Email) -> u32 {
        self.text.push_str(email.as_str());
        let end = u32::try_from(self.text.len()).expect("less than 4 GiB of e-mail addresses");
        self.ends.push(end);
        (self.ends.len() - 1) as u32
    }

    /// The address at `position`.
    pub(super) fn address(&self, position: u32) -> &str {
        let position = position as usize;
        let start = position
            .checked_sub(1)
            .map_or(0, |before| self.ends[before]);
        &self.text[start as usize..self.ends[position] as usize]
    }

    /// The positions of the addresses added more than once, in order. Found by
    /// sorting 32-bit digests of the addresses with their positions (8 bytes each),
    /// which takes less memory than counting the addresses in a map: the list is
    /// made at the end of the planning, when the planner holds the most.
    pub(super) fn shared_addresses(&self) -> Vec<u32> {
        let mut digests: Vec<(u32, u32)> = (0..self.ends.len() as u32)
            .map(|position| {
                let digest = FxBuildHasher.hash_one(self.address(position)) as u32;
                (digest, position)
            })
            .collect();
        digests.sort_unstable();
        let mut shared = Vec::new();
        // Equal digests are often, not always, equal addresses; compare them.
        for run in digests
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|run| run.len() > 1)
        {
            for (i, &(_, position)) in run.iter().enumerate() {
                let email = self.address(position);
                if let Some(&(_, twin)) = run[i + 1..]
                    .iter()
                    .find(|&&(_, other)| self.address(other) == email)
                {
                    shared.extend([position, twin]);
                }
            }
        }
        shared.sort_unstable();
        shared.dedup();
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_seen_finds_the_addresses_added_twice() {
        let mut seen = EmailsSeen::default();
        for address in [
            "ann@x.com",
            "bob@x.com",
            "ann@x.com",
            "cy@x.com",
            "bob@x.com",
        ] {
            seen.add(&Email::parse(address).expect("email"));
        }
        assert_eq!(seen.address(3), "cy@x.com");
        assert_eq!(seen.shared_addresses(), [0, 1, 2, 4]);
    }
}
