//! The endpoint's log lines and metrics, in one place so they agree: requests by
//! operation and status class, refused tokens, the queue's depth and age. Labels
//! are bounded (an operation name, a status class); ids appear only in log lines,
//! tokens nowhere.

use metrics::{counter, gauge};

use super::store::{now_ms, PushStore};
use crate::events::printable;

/// One request answered.
pub fn answered(operation: &'static str, status: u16) {
    let class = match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!("idsync_push_requests_total", "operation" => operation, "status" => class)
        .increment(1);
}

/// A request without the right bearer token.
pub fn unauthorized() {
    counter!("idsync_push_unauthorized_total").increment(1);
    tracing::warn!("Refused a push request without a valid bearer token.");
}

/// A change stored durably: one line per accepted change.
pub fn change_stored(operation: &'static str, id: &str, store: &PushStore) {
    tracing::info!(operation, resource_id = %printable(id), outcome = "stored", "Push stored.");
    queue_figures(store);
}

/// The queue's depth and the age of its oldest change, as gauges.
pub fn queue_figures(store: &PushStore) {
    let (depth, oldest_ms) = store.backlog(now_ms());
    gauge!("idsync_push_queue_depth").set(depth as f64);
    gauge!("idsync_push_oldest_queued_age_seconds").set(oldest_ms as f64 / 1000.0);
}
