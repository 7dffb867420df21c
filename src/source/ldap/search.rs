//! One search in progress: a task of its own sends the request (again for each
//! page, RFC 2696), reads the answers and hands them to the reader in batches.

use std::time::Duration;

use ldap3::asn1::{StructureTag, Tag};
use ldap3::controls::RawControl;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::connection::{code, receive_for, result_text, Connection, Session, BROKEN};
use super::entry::Entry;
use super::wire::{self, Answer, Outcome, Scope, SearchRequest};
use crate::source::SourceError;

/// What one search hands out.
pub enum Item {
    Entry(Entry, Vec<RawControl>),
    /// RFC 4533 SyncInfo, still encoded.
    Intermediate(StructureTag),
    Referral(Vec<String>),
}

/// A search in progress. A task of its own reads the server's answers as they
/// come and decodes them, so that a paged search asks for the next page while
/// the one before is still being read. It hands them over in batches (whatever
/// was decoded before the socket had to be waited on) and reads no further
/// ahead than [`AHEAD`] batches: past that, TCP holds the server back.
pub struct Search<'a> {
    batches: mpsc::Receiver<Result<Vec<Item>, String>>,
    taken: std::vec::IntoIter<Item>,
    taking: JoinHandle<(Option<Session>, Outcome)>,
    connection: &'a mut Connection,
}

/// Items handed over at once, at most; each hand-over wakes the reader.
const BATCH: usize = 256;
/// Batches decoded ahead of the reader: a page or two.
const AHEAD: usize = 8;
/// RFC 2696 simple paged results.
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// The result code idsync gives a search that ended without the server's result.
const OTHER: u32 = 80;

impl Connection {
    /// Starts a search; `page_size` pages it (RFC 2696), `controls` go with it.
    pub async fn search<'a>(
        &'a mut self,
        base: &str,
        filter: &str,
        attributes: &[&str],
        page_size: Option<u32>,
        controls: Vec<RawControl>,
    ) -> Result<Search<'a>, SourceError> {
        let request = SearchRequest {
            base,
            scope: Scope::WholeSubtree,
            size_limit: 0,
            filter,
            attributes,
        };
        Search::start(self, request, page_size, controls).await
    }

    /// A search for at most one entry, to check that `base` can be read.
    pub async fn probe(&mut self, base: &str, filter: &str) -> Result<usize, SourceError> {
        let request = SearchRequest {
            base,
            scope: Scope::WholeSubtree,
            size_limit: 1,
            filter,
            attributes: &["1.1"],
        };
        let (entries, answer) = self.collect(request).await?;
        match answer.code {
            code::SUCCESS | code::SIZE_LIMIT => Ok(entries.len()),
            _ => Err(self.fail(format!(
                "search of {base} answered {}",
                result_text(&answer)
            ))),
        }
    }

    /// Whether the server's root DSE lists the control `oid`.
    pub async fn supports_control(&mut self, oid: &str) -> Result<bool, SourceError> {
        let request = SearchRequest {
            base: "",
            scope: Scope::BaseObject,
            size_limit: 0,
            filter: "(objectClass=*)",
            attributes: &["supportedControl"],
        };
        let (entries, _) = self.collect(request).await?;
        Ok(entries
            .iter()
            .any(|entry| entry.texts("supportedControl").any(|c| c == oid)))
    }

    /// Every entry of a small search, and its result.
    pub(super) async fn collect(
        &mut self,
        request: SearchRequest<'_>,
    ) -> Result<(Vec<Entry>, Outcome), SourceError> {
        let mut search = Search::start(self, request, None, Vec::new()).await?;
        let mut entries = Vec::new();
        while let Some(item) = search.next().await? {
            if let Item::Entry(entry, _) = item {
                entries.push(entry);
            }
        }
        Ok((entries, search.finish().await))
    }
}

/// One search as the reading task runs it.
struct Query {
    request: Tag,
    controls: Vec<RawControl>,
    page_size: Option<u32>,
    timeout: Duration,
}

impl Query {
    /// Reads the answers to request `id` (the first page, or the whole search
    /// unpaged), asking for page after page, until the search ends or the
    /// reader goes away; returns the session (unless it broke) and the server's
    /// result.
    async fn take_items(
        self,
        mut session: Session,
        mut id: i32,
        items: mpsc::Sender<Result<Vec<Item>, String>>,
    ) -> (Option<Session>, Outcome) {
        loop {
            let outcome = match self.read_page(&mut session, id, &items).await {
                Ok(outcome) => outcome,
                Err(Stop::Broken(reason)) => {
                    let _ = items.send(Err(reason.clone())).await;
                    return (None, other(reason));
                }
                Err(Stop::ReaderGone) => {
                    return (Some(session), other("the reader stopped".into()))
                }
            };
            let asked = match self.next_cookie(&outcome) {
                Ok(Some(cookie)) => self.ask(&mut session, &cookie).await,
                Ok(None) => return (Some(session), outcome),
                Err(reason) => {
                    let _ = items.send(Err(reason.clone())).await;
                    return (Some(session), other(reason));
                }
            };
            match asked {
                Ok(next) => id = next,
                Err(reason) => {
                    let _ = items.send(Err(reason.clone())).await;
                    return (None, other(reason));
                }
            }
        }
    }

    /// Sends the request for the page after `cookie` (the first page, or the
    /// whole search unpaged, for an empty one); its message id.
    async fn ask(&self, session: &mut Session, cookie: &[u8]) -> Result<i32, String> {
        let broken = |err: std::io::Error| format!("the search broke off: {err}");
        let mut controls = self.controls.clone();
        let paging = self.page_size.map(|size| paged_control(size, cookie));
        controls.extend(paging.transpose().map_err(broken)?);
        session
            .send(self.request.clone(), &controls)
            .await
            .map_err(broken)
    }

    /// The answers to request `id`, handed to the reader in batches; the
    /// server's result for it.
    async fn read_page(
        &self,
        session: &mut Session,
        id: i32,
        items: &mpsc::Sender<Result<Vec<Item>, String>>,
    ) -> Result<Outcome, Stop> {
        let broken = |err: String| Stop::Broken(format!("the search broke off: {err}"));
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if batch.len() >= BATCH || (!batch.is_empty() && !session.holds_message()) {
                hand_over(items, &mut batch, session, id).await?;
            }
            let received = tokio::time::timeout(self.timeout, receive_for(session, id)).await;
            let message = received
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
                .map_err(broken)?;
            let item = match message.answer {
                Answer::Entry(entry) => Item::Entry(entry, message.controls),
                Answer::Reference(urls) => Item::Referral(urls),
                Answer::Intermediate(info) => Item::Intermediate(info),
                Answer::Done(mut outcome) => {
                    hand_over(items, &mut batch, session, id).await?;
                    outcome.controls = message.controls;
                    return Ok(outcome);
                }
            };
            batch.push(item);
        }
    }

    /// The cookie of the next page, if the search is paged and not done.
    fn next_cookie(&self, outcome: &Outcome) -> Result<Option<Vec<u8>>, String> {
        if self.page_size.is_none() || outcome.code != code::SUCCESS {
            return Ok(None);
        }
        let Some(control) = outcome
            .controls
            .iter()
            .find(|c| c.ctype == PAGED_RESULTS_OID)
        else {
            return Ok(None);
        };
        let cookie = wire::paged_results_cookie(control.val.as_deref().unwrap_or_default())
            .map_err(|why| format!("the paged results control is broken: {why}"))?;
        Ok((!cookie.is_empty()).then(|| cookie.to_vec()))
    }
}

/// Sends the batch to the reader; abandons search `id` if the reader is gone.
async fn hand_over(
    items: &mpsc::Sender<Result<Vec<Item>, String>>,
    batch: &mut Vec<Item>,
    session: &mut Session,
    id: i32,
) -> Result<(), Stop> {
    if batch.is_empty() {
        return Ok(());
    }
    let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
    if items.send(Ok(full)).await.is_err() {
        let _ = session.send(wire::abandon_request(id), &[]).await;
        return Err(Stop::ReaderGone);
    }
    Ok(())
}

/// Why a search's reading task stopped early.
enum Stop {
    Broken(String),
    ReaderGone,
}

fn other(text: String) -> Outcome {
    Outcome {
        code: OTHER,
        text,
        ..Outcome::default()
    }
}

/// `SEQUENCE { size INTEGER, cookie OCTET STRING }`, non-critical as RFC 2696 allows.
fn paged_control(size: u32, cookie: &[u8]) -> std::io::Result<RawControl> {
    Ok(RawControl {
        ctype: PAGED_RESULTS_OID.into(),
        crit: false,
        val: Some(wire::paged_results_value(size, cookie)?),
    })
}

impl<'a> Search<'a> {
    /// Starts `request` on `connection`, which it has to itself until [`Search::finish`].
    pub(super) async fn start(
        connection: &'a mut Connection,
        request: SearchRequest<'_>,
        page_size: Option<u32>,
        controls: Vec<RawControl>,
    ) -> Result<Self, SourceError> {
        let base = request.base;
        let request = request
            .encode()
            .map_err(|reason| connection.fail(format!("search of {base}: {reason}")))?;
        let mut session = connection
            .session
            .take()
            .ok_or_else(|| connection.fail(BROKEN.into()))?;
        let query = Query {
            request,
            controls,
            page_size,
            timeout: connection.timeout,
        };
        // Asked here rather than by the reading task, so that the server starts
        // at once, not once a worker runs the task (docs/performance.md).
        let id = (query.ask(&mut session, &[]).await).map_err(|reason| connection.fail(reason))?;
        let (sender, batches) = mpsc::channel(AHEAD);
        Ok(Search {
            batches,
            taken: Vec::new().into_iter(),
            taking: tokio::spawn(query.take_items(session, id, sender)),
            connection,
        })
    }

    /// The next item, or `None` once the server said the search is done.
    pub async fn next(&mut self) -> Result<Option<Item>, SourceError> {
        loop {
            if let Some(item) = self.taken.next() {
                return Ok(Some(item));
            }
            match self.batches.recv().await {
                Some(Ok(batch)) => self.taken = batch.into_iter(),
                Some(Err(reason)) => return Err(self.connection.fail(reason)),
                None => return Ok(None),
            }
        }
    }

    /// The server's result for the whole search; the connection is free again.
    pub async fn finish(self) -> Outcome {
        drop(self.batches);
        let (session, outcome) = self.taking.await.unwrap_or_else(|err| {
            (
                None,
                other(format!("the search's reading task failed: {err}")),
            )
        });
        self.connection.session = session;
        outcome
    }
}

#[cfg(test)]
pub(super) mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::source::ldap::ber::{self, tag, Reader};
    use crate::source::ldap::wire::tests::{done, entry};

    /// The next request the client sent: its id, operation tag and the value of
    /// its paged results control, if any.
    pub async fn request(server: &mut DuplexStream) -> (i64, u8, Option<Vec<u8>>) {
        let mut head = [0u8; 2];
        server.read_exact(&mut head).await.expect("a request");
        let mut length = vec![0u8; usize::from(head[1] & 0x7f) * usize::from(head[1] >= 0x80)];
        server.read_exact(&mut length).await.expect("its length");
        let (_, _, size) = ber::header(&[&head[..], &length].concat())
            .unwrap()
            .unwrap();
        let mut body = vec![0u8; size];
        server.read_exact(&mut body).await.expect("its body");
        let mut parts = Reader::new(&body);
        let id = parts.expect(tag::INTEGER).unwrap();
        let id = i64::from(ber::unsigned(parts.contents(&id)).unwrap());
        let operation = parts.next().unwrap().tag;
        let paged = parts.next_if(tag::context(0)).unwrap().and_then(|list| {
            let mut list = parts.inside(&list);
            let control = list.expect(tag::SEQUENCE).unwrap();
            let mut control = list.inside(&control);
            let oid = control.expect(tag::OCTET_STRING).unwrap();
            let value = control.next_if(tag::OCTET_STRING).unwrap()?;
            (control.contents(&oid) == PAGED_RESULTS_OID.as_bytes()).then(|| {
                wire::paged_results_cookie(control.contents(&value))
                    .unwrap()
                    .to_vec()
            })
        });
        (id, operation, paged)
    }

    fn paged(cookie: &[u8]) -> RawControl {
        RawControl {
            ctype: PAGED_RESULTS_OID.into(),
            crit: false,
            val: Some(wire::paged_results_value(0, cookie).unwrap()),
        }
    }

    #[tokio::test]
    async fn a_paged_search_follows_the_cookies_and_frees_the_connection() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut connection = Connection::over(client);
        let serving = tokio::spawn(async move {
            let (id, operation, cookie) = request(&mut server).await;
            assert_eq!(
                (operation, cookie.as_deref()),
                (tag::application(3), Some(&b""[..]))
            );
            for n in 0..2 {
                server
                    .write_all(&entry(id, &format!("uid={n}"), "x@y"))
                    .await
                    .unwrap();
            }
            server
                .write_all(&done(id, 0, "", &[paged(b"next")]))
                .await
                .unwrap();
            let (id, _, cookie) = request(&mut server).await;
            assert_eq!(cookie.as_deref(), Some(&b"next"[..]), "the second page");
            server.write_all(&entry(id, "uid=2", "x@y")).await.unwrap();
            server
                .write_all(&done(id, 0, "", &[paged(b"")]))
                .await
                .unwrap();
            server
        });
        let mut search = connection
            .search("dc=x", "(uid=*)", &["mail"], Some(2), Vec::new())
            .await
            .expect("started");
        let mut dns = Vec::new();
        while let Some(item) = search.next().await.expect("an item") {
            if let Item::Entry(entry, _) = item {
                dns.push(entry.dn);
            }
        }
        assert_eq!(dns, ["uid=0", "uid=1", "uid=2"]);
        assert_eq!(search.finish().await.code, code::SUCCESS);
        assert!(connection.session.is_some(), "the connection is free again");
        serving.await.expect("the server saw both pages");
    }

    #[tokio::test]
    async fn a_search_the_reader_leaves_is_abandoned() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut connection = Connection::over(client);
        let mut search = connection
            .search("dc=x", "(uid=*)", &["mail"], None, Vec::new())
            .await
            .expect("started");
        let (id, _, _) = request(&mut server).await;
        let many: Vec<u8> = (0..BATCH * (AHEAD + 2))
            .flat_map(|n| entry(id, &format!("uid={n}"), "x@y"))
            .collect();
        let sending = tokio::spawn(async move {
            let _ = server.write_all(&many).await;
            server
        });
        assert!(matches!(search.next().await, Ok(Some(Item::Entry(..)))));
        let outcome = search.finish().await;
        assert_ne!(outcome.code, code::SUCCESS, "{}", outcome.text);
        let mut server = sending.await.expect("sent");
        let (abandon_id, operation, _) = request(&mut server).await;
        assert_eq!(operation & 0x1f, 16, "an AbandonRequest");
        assert!(abandon_id > id);
        assert!(connection.session.is_some());
    }
}
