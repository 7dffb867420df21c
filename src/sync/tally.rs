//! The bookkeeping of one run: what the plan settles by itself, what each
//! outcome counts as, and what the cache must remember of it.

use std::time::Instant;

use super::{Aborted, PlannedAction, Report, Summary, SyncError};
use crate::apply::{Action, Outcome};
use crate::cache::{SubjectRecord, SubjectState};
use crate::events;
use crate::model::{Email, Fingerprint, Subject};
use crate::plan::{ChangeKind, Plan, UpdateUser};

pub(super) fn is_deactivation(action: &Action) -> bool {
    matches!(action, Action::Change(change) if change.kind == ChangeKind::Deactivate)
}

/// What the sends came to, besides each user's outcome.
pub(super) struct Sent {
    /// Creates and updates not done (a shutdown, or a refused API key, stopped them).
    pub(super) not_done: usize,
    /// The first refusal of our API key.
    pub(super) refused: Option<(u16, String)>,
    /// The first redirect: why `target.url` looks wrong.
    pub(super) misdirected: Option<String>,
}

impl Sent {
    pub(super) fn count(&mut self, action: &Action, outcome: &Outcome) {
        if !is_deactivation(action)
            && !matches!(
                outcome,
                Outcome::Interrupted | Outcome::Unauthorized { .. } | Outcome::Misdirected { .. }
            )
        {
            self.not_done -= 1;
        }
        match outcome {
            Outcome::Unauthorized { status, message } => {
                self.refused.get_or_insert((*status, message.clone()));
            }
            Outcome::Misdirected { reason } => {
                self.misdirected.get_or_insert(reason.clone());
            }
            _ => {}
        }
    }
}

/// What a run is to send: creates, updates, then deactivations.
pub(super) struct Actions<A> {
    /// The creates and updates: the actions for users in the directory.
    pub(super) directory_actions: usize,
    pub(super) all: A,
}

/// The bookkeeping of one run in progress.
pub(super) struct Run {
    pub(super) summary: Summary,
    pub(super) started: Instant,
    pub(super) adoptions: Vec<(Subject, Option<SubjectRecord>)>,
}

impl Run {
    pub(super) fn finish(mut self) -> Summary {
        self.summary.duration_ms = elapsed_ms(self.started);
        self.summary
    }

    pub(super) fn abort(mut self, error: SyncError) -> Aborted {
        self.summary.duration_ms = elapsed_ms(self.started);
        Aborted {
            error,
            summary: self.summary,
        }
    }

    /// Counts what the plan settles by itself and returns the gateway actions.
    pub(super) fn take_plan(
        &mut self,
        plan: Plan,
        dry_run: bool,
    ) -> Actions<impl Iterator<Item = Action>> {
        let counts = &mut self.summary.counts;
        counts.unchanged = plan.unchanged;
        counts.skipped_inactive = plan.skipped_inactive;
        counts.skipped_invalid = plan.invalid.len();
        counts.failed = plan.still_rejected.len();
        counts.existing = plan.adoptions.len();
        for problem in &plan.invalid {
            events::user_skipped(&problem.label, &problem.reason);
        }
        self.summary.skipped = plan.invalid.into_iter().map(Report::from).collect();
        self.summary.failures = plan.still_rejected.into_iter().map(Report::from).collect();
        if let Some(guard) = &plan.deactivation_guard {
            events::deactivation_guard_tripped(
                guard.planned,
                guard.allowed,
                guard.managed,
                &guard.to_string(),
            );
            counts.deactivations_blocked = guard.planned;
            self.summary.deactivation_guard = Some(guard.to_string());
        }
        let now = chrono::Utc::now().timestamp();
        for adoption in plan.adoptions {
            if dry_run {
                events::user_would_adopt(&adoption.record.email);
                self.planned(
                    "adopt",
                    &adoption.record.email,
                    "already in the gateway; would be managed from now on",
                );
            } else {
                events::user_adopted(&adoption.record.email);
            }
            let record = SubjectRecord {
                updated_at: now,
                ..adoption.record
            };
            self.adoptions.push((adoption.subject, Some(record)));
        }
        let directory_actions = plan.creates.len() + plan.updates.len();
        // The creates are unpacked one by one as they are sent (see `CreateList`).
        let creates = plan.creates.into_iter().map(Action::Create);
        let changes = plan
            .updates
            .into_iter()
            .chain(plan.deactivations)
            .map(Action::Change);
        Actions {
            directory_actions,
            all: creates.chain(changes),
        }
    }

    fn planned(&mut self, action: &'static str, user: &Email, reason: &str) {
        self.summary.actions.push(PlannedAction {
            action,
            user: user.to_string(),
            reason: reason.into(),
        });
    }

    fn fail(&mut self, user: &Email, verb: &'static str, reason: String) {
        events::user_failed(user, verb, &reason);
        self.summary.failures.push(Report {
            user: user.to_string(),
            reason,
        });
    }

    /// Counts one outcome and returns what the cache must remember of it.
    pub(super) fn tally(
        &mut self,
        action: &Action,
        outcome: Outcome,
    ) -> Option<(Subject, Option<SubjectRecord>)> {
        events::action_settled();
        let now = chrono::Utc::now().timestamp();
        match action {
            Action::Create(user) => {
                let email = &user.profile.email;
                let record =
                    |state: SubjectState, fingerprint: Fingerprint, detail: Option<String>| {
                        Some((
                            user.subject.clone(),
                            Some(SubjectRecord {
                                email: email.clone(),
                                state,
                                fingerprint,
                                detail: detail.map(String::into_boxed_str),
                                deactivated: false,
                                updated_at: now,
                            }),
                        ))
                    };
                match outcome {
                    Outcome::Created => {
                        self.summary.counts.created += 1;
                        events::user_created(email);
                        record(SubjectState::Created, user.fingerprint, None)
                    }
                    Outcome::WouldWrite => {
                        self.summary.counts.created += 1;
                        self.planned("create", email, "new in the directory");
                        None
                    }
                    Outcome::Adopted => {
                        self.summary.counts.existing += 1;
                        events::user_adopted(email);
                        // Its data in the gateway was not compared: `update_existing`
                        // checks it at the next run.
                        record(SubjectState::Adopted, Fingerprint::UNVERIFIED, None)
                    }
                    Outcome::Rejected { status, message } => {
                        self.summary.counts.failed += 1;
                        self.fail(
                            email,
                            "create",
                            format!("the gateway rejected it: {status} {message}"),
                        );
                        record(
                            SubjectState::Rejected,
                            user.fingerprint,
                            Some(format!("{status}: {message}")),
                        )
                    }
                    other => {
                        self.count_unfinished(email, &other, "create");
                        None
                    }
                }
            }
            Action::Change(change) => self.tally_change(change, outcome, now),
        }
    }

    fn tally_change(
        &mut self,
        change: &UpdateUser,
        outcome: Outcome,
        now: i64,
    ) -> Option<(Subject, Option<SubjectRecord>)> {
        let verb = match change.kind {
            ChangeKind::Update => "update",
            ChangeKind::Deactivate => "deactivate",
            ChangeKind::Reactivate => "reactivate",
        };
        let done = || {
            Some((
                change.subject.clone(),
                Some(SubjectRecord {
                    updated_at: now,
                    ..change.record.clone()
                }),
            ))
        };
        let counts = &mut self.summary.counts;
        match (change.kind, outcome) {
            (ChangeKind::Update, Outcome::Unchanged) => {
                counts.unchanged += 1;
                events::user_unchanged(verb);
                done()
            }
            (ChangeKind::Update, Outcome::Changed) => {
                counts.updated += 1;
                events::user_changed(&change.key, verb, &change.reason);
                done()
            }
            (ChangeKind::Reactivate, Outcome::Changed | Outcome::Unchanged) => {
                counts.reactivated += 1;
                events::user_changed(&change.key, verb, &change.reason);
                done()
            }
            // Already gone from the gateway: nobody left to switch off.
            (ChangeKind::Deactivate, Outcome::Changed | Outcome::Unchanged | Outcome::Missing) => {
                counts.deactivated += 1;
                events::user_changed(&change.key, verb, &change.reason);
                done()
            }
            (kind, Outcome::WouldWrite) => {
                match kind {
                    ChangeKind::Update => counts.updated += 1,
                    ChangeKind::Reactivate => counts.reactivated += 1,
                    ChangeKind::Deactivate => counts.deactivated += 1,
                }
                self.planned(verb, &change.key, &change.reason);
                None
            }
            (_, Outcome::Missing) => {
                counts.failed += 1;
                self.fail(
                    &change.key,
                    verb,
                    "is no longer in the gateway; idsync forgets it and creates it again at the next run".into(),
                );
                Some((change.subject.clone(), None))
            }
            (_, other) => {
                self.count_unfinished(&change.key, &other, verb);
                None
            }
        }
    }

    /// Failures and interruptions, common to every action.
    fn count_unfinished(&mut self, user: &Email, outcome: &Outcome, verb: &'static str) {
        let deactivating = verb == "deactivate";
        let reason = match outcome {
            Outcome::Rejected { status, message } => {
                format!("the gateway rejected the {verb}: {status} {message}")
            }
            Outcome::Missing => format!("the gateway answered 404 to the {verb}; check target.url"),
            Outcome::Refused { reason } => format!("not {verb}d: {reason}"),
            Outcome::GaveUp { attempts, reason } => {
                format!("could not {verb} after {attempts} attempts ({reason}); the next run tries again")
            }
            // Counted as interrupted when the run ends.
            _ => return,
        };
        if deactivating {
            self.summary.counts.deactivation_failed += 1;
        } else {
            self.summary.counts.failed += 1;
        }
        self.fail(user, verb, reason);
    }
}

/// Milliseconds since `started`, rounded to the microsecond: a change run can take
/// a few milliseconds, and whole ones would hide a tenth of it.
fn elapsed_ms(started: Instant) -> f64 {
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    micros as f64 / 1000.0
}
