//! Range retrieval (Active Directory's answer for an attribute with more values
//! than its `MaxValRange`, 1,500 by default: `member;range=0-1499` and no
//! `member`). The rest is asked for a range at a time by base searches of the
//! entry, until an answer's range ends in `*`.

use super::connection::{code, failure, result_text, Connection};
use super::entry::Entry;
use super::wire::{Scope, SearchRequest};
use crate::source::SourceError;

/// More rounds than this is a server going round in circles (at 1,500 values a
/// round, 15 million values).
const MAX_ROUNDS: usize = 10_000;

/// `name;range=start-end` as (`name`, `start`, `end`); `end` is `None` for `*`.
fn parse(attribute: &str) -> Option<(&str, u64, Option<u64>)> {
    let at = attribute.to_ascii_lowercase().find(";range=")?;
    let (name, range) = (&attribute[..at], &attribute[at + ";range=".len()..]);
    let (start, end) = range.split_once('-')?;
    let end = match end {
        "*" => None,
        end => Some(end.parse().ok()?),
    };
    Some((name, start.parse().ok()?, end))
}

impl Connection {
    /// `entry` with the attribute it was sent in ranges read whole.
    pub async fn read_ranges(&mut self, entry: Entry) -> Result<Entry, SourceError> {
        let Some(sent) = entry.ranged_attribute().map(str::to_owned) else {
            return Ok(entry);
        };
        let url = self.url().to_owned();
        let broken = |why: String| failure(&url, format!("reading {} by ranges: {why}", entry.dn));
        let (name, _, mut end) = parse(&sent).ok_or_else(|| broken(format!("{sent}?")))?;
        let mut values: Vec<Vec<u8>> = entry.values(&sent).map(<[u8]>::to_vec).collect();
        let mut rounds = 0;
        while let Some(last) = end {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(broken(format!("more than {MAX_ROUNDS} ranges")));
            }
            let (answered, more) = self.next_range(&entry.dn, name, last + 1).await?;
            values.extend(more);
            end = answered;
        }
        let name = name.to_owned();
        Ok(entry.with_values(&name, &values))
    }

    /// The values of `name` from `start` on, and where the server's range ended.
    async fn next_range(
        &mut self,
        dn: &str,
        name: &str,
        start: u64,
    ) -> Result<(Option<u64>, Vec<Vec<u8>>), SourceError> {
        let asked = format!("{name};range={start}-*");
        let request = SearchRequest {
            base: dn,
            scope: Scope::BaseObject,
            size_limit: 0,
            filter: "(objectClass=*)",
            attributes: &[asked.as_str()],
        };
        let (entries, outcome) = self.collect(request).await?;
        let broken = |why: String| self.fail(format!("reading {dn} by ranges: {why}"));
        if outcome.code != code::SUCCESS {
            return Err(broken(format!(
                "asking for {asked}: {}",
                result_text(&outcome)
            )));
        }
        let answer = entries
            .first()
            .ok_or_else(|| broken(format!("no entry for {asked}")))?;
        let sent = answer
            .ranged_attribute()
            .ok_or_else(|| broken(format!("no range in the answer to {asked}")))?;
        match parse(sent) {
            Some((_, from, end)) if from == start => {
                Ok((end, answer.values(sent).map(<[u8]>::to_vec).collect()))
            }
            _ => Err(broken(format!("asked for {asked}, got {sent}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::source::ldap::search::tests::request;
    use crate::source::ldap::wire::tests::{done, entry_with};

    #[test]
    fn range_names_parse() {
        assert_eq!(
            parse("member;range=0-1499"),
            Some(("member", 0, Some(1499)))
        );
        assert_eq!(parse("member;Range=1500-*"), Some(("member", 1500, None)));
        assert_eq!(parse("member"), None);
        assert_eq!(parse("member;range=a-*"), None);
    }

    #[tokio::test]
    async fn a_ranged_attribute_is_read_whole_by_base_searches() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut connection = Connection::over(client);
        let group = "cn=all,dc=x";
        let serving = tokio::spawn(async move {
            for (range, values) in [("2-3", &["c", "d"][..]), ("4-*", &["e"])] {
                let (id, operation, _) = request(&mut server).await;
                assert_eq!(operation, 0x63, "a SearchRequest");
                let name = format!("member;range={range}");
                let answer = entry_with(id, group, &[(name.as_str(), values)]);
                server.write_all(&answer).await.unwrap();
                server.write_all(&done(id, 0, "", &[])).await.unwrap();
            }
        });
        let first = Entry::for_tests(
            group,
            &[("cn", &["all"]), ("member;range=0-1", &["a", "b"])],
        );
        let whole = connection.read_ranges(first).await.expect("read whole");
        serving.await.expect("two more ranges asked for");
        assert_eq!(
            whole.texts("member").collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(whole.text("cn"), Some("all"));
        assert_eq!(whole.ranged_attribute(), None);
    }

    #[tokio::test]
    async fn an_answer_out_of_step_aborts() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut connection = Connection::over(client);
        tokio::spawn(async move {
            let (id, _, _) = request(&mut server).await;
            let answer = entry_with(id, "cn=g", &[("member;range=0-*", &["a"])]);
            server.write_all(&answer).await.unwrap();
            server.write_all(&done(id, 0, "", &[])).await.unwrap();
            server
        });
        let first = Entry::for_tests("cn=g", &[("member;range=0-1", &["a", "b"])]);
        let said = connection.read_ranges(first).await.expect_err("an error");
        assert!(said.to_string().contains("got member;range=0-*"), "{said}");
    }
}
