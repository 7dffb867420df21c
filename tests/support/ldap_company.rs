//! The company the LDAP tests load into a real server (slapd, Samba's Active
//! Directory): people numbered from 0 in teams whose groups nest two deep, so that
//! every person's groups are known without asking the server.
//!
//! engineering holds its first 5 % directly and the groups platform (up to 50 %) and
//! sre (up to 60 %); sales holds the rest; all-staff holds engineering and sales;
//! oncall holds every tenth person.

use std::ops::Range;

pub struct Company {
    pub people: usize,
}

impl Company {
    /// Where engineering's direct members, platform, sre and sales start and end.
    fn teams(&self) -> [Range<usize>; 4] {
        let n = self.people;
        [0..n / 20, n / 20..n / 2, n / 2..n * 3 / 5, n * 3 / 5..n]
    }

    /// The groups person `i` is in, nesting included, sorted.
    pub fn expected_groups(&self, i: usize) -> Vec<String> {
        let [direct, platform, sre, _] = self.teams();
        let mut groups = vec!["all-staff"];
        if direct.contains(&i) {
            groups.push("engineering");
        } else if platform.contains(&i) {
            groups.extend(["engineering", "platform"]);
        } else if sre.contains(&i) {
            groups.extend(["engineering", "sre"]);
        } else {
            groups.push("sales");
        }
        if i % 10 == 0 {
            groups.push("oncall");
        }
        let mut groups: Vec<String> = groups.into_iter().map(str::to_owned).collect();
        groups.sort();
        groups
    }

    /// Each group's name and member DNs, a group after the groups nested in it
    /// (as slapd's memberof overlay needs them).
    pub fn groups(
        &self,
        user_dn: impl Fn(usize) -> String,
        group_dn: impl Fn(&str) -> String,
    ) -> Vec<(&'static str, Vec<String>)> {
        let [direct, platform, sre, sales] = self.teams();
        let users = |range: Range<usize>| range.map(&user_dn).collect::<Vec<_>>();
        let mut engineering = users(direct);
        engineering.extend([group_dn("platform"), group_dn("sre")]);
        let oncall = (0..self.people).step_by(10).map(&user_dn).collect();
        vec![
            ("platform", users(platform)),
            ("sre", users(sre)),
            ("oncall", oncall),
            ("engineering", engineering),
            ("sales", users(sales)),
            (
                "all-staff",
                vec![group_dn("engineering"), group_dn("sales")],
            ),
        ]
    }
}
