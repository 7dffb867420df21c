//! The diff: what the directory says versus what the cache remembers (and, on a
//! first run, what the gateway already holds), as a list of actions, built while
//! the directory is read. What to do with each user is decided by a pure function
//! (`decide`, in `plan/decide.rs`) and table-tested there; the [`Planner`] records
//! each decision in the [`Plan`]. The planner reads no clock and decides without
//! I/O. It does I/O only through what it is given: the whole cache records it
//! needs are read through [`Records`] (from the cache's store; from memory in the
//! tests below), and the list of planned creates may write its full parts to a
//! file in the directory given to [`Planner::spill_creates_into`], and read them
//! back when they are sent.

mod creates;
mod decide;
mod emails;

use std::collections::HashMap;

use rustc_hash::FxHashSet;

use crate::cache::{CacheError, RecordSummary, Records, SubjectRecord, SubjectState, Taken};
use crate::config::{DeactivationLimit, Deprovision};
use crate::model::{
    DirectoryUser, Email, EmailError, Fingerprint, GatewayUser, Profile, Subject, UnusableEntry,
};
use crate::source::Scope;
use decide::{decide, Cached, Decision, UpdateCause};
use emails::EmailsSeen;

pub use creates::CreateList;

/// A user to create in the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateUser {
    pub subject: Subject,
    pub profile: Profile,
    pub fingerprint: Fingerprint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Name, groups or mapped attributes changed.
    Update,
    /// Left the directory, or `active: false` in it.
    Deactivate,
    /// Deactivated by idsync earlier, active in the directory again.
    Reactivate,
}

/// A change to a user the gateway already holds: read it, merge, `PUT` if different.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateUser {
    pub subject: Subject,
    /// The e-mail the gateway holds the user under.
    pub key: Email,
    pub kind: ChangeKind,
    /// New values of the owned fields; `None` changes only the status.
    pub profile: Option<Profile>,
    /// What the cache records once the change is made.
    pub record: SubjectRecord,
    /// Why, in words, for logs and the dry run.
    pub reason: String,
}

/// A user the gateway already holds that idsync adopts: recorded as managed (in
/// the cache's words, `SubjectState::Adopted`), nothing sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub subject: Subject,
    pub record: SubjectRecord,
}

/// A user the run reports instead of syncing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The e-mail, or the subject when there is no usable e-mail.
    pub label: String,
    pub reason: String,
}

/// How idsync words a user it leaves alone because the gateway has it in its
/// admin group. The gateway's 409 to a create of such a user is recorded as a
/// rejection whose message holds these words; the planner then reports the user
/// as skipped, like an admin it finds on a first run, instead of as a failure.
pub const GATEWAY_ADMIN: &str = "is in the gateway's admin group";

/// Why idsync leaves a user alone: the gateway has it in its admin group.
pub fn gateway_admin_reason(admin_group: &str) -> String {
    format!("{GATEWAY_ADMIN} {admin_group:?}; idsync leaves admins made in the gateway alone (groups.allow_admin_group)")
}

/// What the planner may do beyond creating users.
#[derive(Debug, Clone)]
pub struct Rules {
    pub update_existing: bool,
    pub deprovision: Deprovision,
    pub max_deactivations: DeactivationLimit,
    /// `--allow-mass-deactivation`: this run ignores `max_deactivations`.
    pub allow_mass_deactivation: bool,
    /// The gateway's admin group, kept on users idsync updates unless the IdP owns it.
    pub admin_group: String,
    pub allow_admin_group: bool,
    /// `--retry-rejected`: users the gateway rejected before are resent this run
    /// even though their directory data has not changed.
    pub retry_rejected: bool,
    pub owns_slack_id: bool,
    pub owns_picture: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            update_existing: false,
            deprovision: Deprovision::Off,
            max_deactivations: DeactivationLimit::Percent(10),
            allow_mass_deactivation: false,
            admin_group: "admin".into(),
            allow_admin_group: false,
            retry_rejected: false,
            owns_slack_id: false,
            owns_picture: false,
        }
    }
}

/// The run's work. Every directory entry lands in exactly one of `creates`,
/// `updates` (updates and reactivations), `adoptions`, `unchanged`,
/// `skipped_inactive`, `invalid` and `still_rejected`; deactivations are extra.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub creates: CreateList,
    pub updates: Vec<UpdateUser>,
    pub adoptions: Vec<Adoption>,
    /// Deactivations; empty when the guard stopped them.
    pub deactivations: Vec<UpdateUser>,
    /// Already in step with the directory.
    pub unchanged: usize,
    /// `active: false` in the directory (deactivated or not).
    pub skipped_inactive: usize,
    /// Unusable data (no valid e-mail, over a gateway limit, a shared e-mail), and
    /// admins made in the gateway, which idsync leaves alone.
    pub invalid: Vec<Problem>,
    /// The gateway rejected this data before and it has not changed since.
    pub still_rejected: Vec<Problem>,
    /// Set when more deactivations were due than `max_deactivations` allows.
    pub deactivation_guard: Option<GuardTripped>,
}

impl Plan {
    /// How much work the plan holds, for the log.
    pub fn size(&self) -> crate::events::PlanSize {
        crate::events::PlanSize {
            create: self.creates.len(),
            update: self.updates.len(),
            adopt: self.adoptions.len(),
            deactivate: self.deactivations.len(),
            unchanged: self.unchanged,
            skipped_inactive: self.skipped_inactive,
            skipped_invalid: self.invalid.len(),
            still_rejected: self.still_rejected.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardTripped {
    pub planned: usize,
    pub allowed: usize,
    pub managed: usize,
    pub limit: DeactivationLimit,
}

impl std::fmt::Display for GuardTripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} deactivations are due, more than sync.max_deactivations = {} of {} managed users allows ({}); none were made. \
             Check the directory, then raise the limit or run once with --allow-mass-deactivation",
            self.planned, self.limit, self.managed, self.allowed
        )
    }
}

/// Plans a directory while it is read. Users arrive in chunks, in directory order
/// ([`Planner::add`]), and only what needs doing is kept: memory holds the work
/// and the records of users not listed yet, never the whole directory. A user's
/// record leaves `records` as the user is planned, so the records left at the end
/// are the leavers'.
pub struct Planner<'a> {
    records: Records,
    /// Managed, active subjects before the run: the deactivation guard's base.
    managed: usize,
    /// The gateway's users by e-mail, read when the cache is empty (a first run
    /// against a populated gateway), so that they are adopted instead of meeting a
    /// 409 each.
    inventory: Option<HashMap<String, GatewayUser>>,
    rules: &'a Rules,
    plan: Plan,
    /// The e-mail of every active user with a usable one, in directory order.
    emails: EmailsSeen,
    /// Where those users landed in `plan`, by the position of their e-mail in
    /// `emails`, in increasing order; the users not listed are unchanged.
    slots: Vec<(u32, PlanSlot)>,
}

/// One entry of a list of [`Plan`]: the list, and the entry's index in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PlanSlot {
    Create(usize),
    Update(usize),
    Adoption(usize),
    Invalid(usize),
    StillRejected(usize),
}

impl<'a> Planner<'a> {
    pub fn new(
        records: Records,
        inventory: Option<HashMap<String, GatewayUser>>,
        rules: &'a Rules,
    ) -> Self {
        let managed = records.kept_active();
        Self {
            records,
            managed,
            inventory,
            rules,
            plan: Plan::default(),
            emails: EmailsSeen::default(),
            slots: Vec::new(),
        }
    }

    /// The creates planned wait in a file in `directory`, but for the last 1 MB
    /// (see [`CreateList`]).
    pub fn spill_creates_into(&mut self, directory: &std::path::Path) {
        self.plan.creates.spill_into(directory);
    }

    /// Managed, active users before this run.
    pub fn managed(&self) -> usize {
        self.managed
    }

    /// Plans the next users of the directory. Fails only if the cache cannot be
    /// read.
    pub fn add(&mut self, users: Vec<DirectoryUser>) -> Result<(), CacheError> {
        users.into_iter().try_for_each(|user| self.plan_user(user))
    }

    /// The read is over: withdraws users that share an e-mail, finds the leavers
    /// (the managed users a complete read left out, or those a change set removed)
    /// and applies the deactivation guard. `unusable` are the entries the source
    /// could not key. Also returns the records no user took: freeing a large
    /// cache's takes a while (docs/performance.md), which the caller may spend
    /// where nothing waits for it.
    pub fn finish(
        mut self,
        unusable: Vec<UnusableEntry>,
        scope: Scope,
    ) -> Result<(Plan, Records), CacheError> {
        self.withdraw_shared_emails();
        let mut plan = std::mem::take(&mut self.plan);
        plan.invalid.splice(
            0..0,
            unusable.into_iter().map(|entry| Problem {
                label: entry.label,
                reason: entry.reason,
            }),
        );
        if self.rules.deprovision == Deprovision::Deactivate {
            self.deactivate_leavers(&mut plan, scope)?;
        } else {
            plan.deactivations.clear();
        }
        Ok((plan, self.records))
    }

    /// Adds the leavers to the plan's deactivations, behind the guard. Looked
    /// for only when they would be deactivated: finding the leavers' subjects
    /// reads the cache a second time.
    fn deactivate_leavers(&mut self, plan: &mut Plan, scope: Scope) -> Result<(), CacheError> {
        let leavers = match scope {
            Scope::Complete => {
                std::mem::take(&mut self.records).remaining(RecordSummary::is_kept_active)?
            }
            Scope::Changes { removed } => removed_records(&mut self.records, removed)?,
        };
        let mut deactivations = std::mem::take(&mut plan.deactivations);
        deactivations.extend(
            leavers.into_iter().map(|(subject, record)| {
                deactivation(subject, record, "no longer in the directory")
            }),
        );
        deactivations.sort_by(|a, b| a.key.cmp(&b.key));
        guard_deactivations(plan, deactivations, self.managed, self.rules);
        Ok(())
    }

    /// Decides what to do with one user, then records it.
    fn plan_user(&mut self, user: DirectoryUser) -> Result<(), CacheError> {
        let cached = Cached::from(self.records.take(&user.subject));
        let gateway = match (&self.inventory, &user.email) {
            (Some(users), Ok(email)) => users.get(email.as_str()),
            _ => None,
        };
        let decision = decide(&user, cached, gateway, self.rules);
        self.record_decision(user, decision)
    }

    /// Carries out a decision: counts the user, or puts it in a list of the plan,
    /// reading its whole cache record when the decision needs it. The e-mail of
    /// every active user with a usable one is noted, and where in the plan the user
    /// landed, for [`Planner::withdraw_shared_emails`].
    fn record_decision(
        &mut self,
        user: DirectoryUser,
        decision: Decision,
    ) -> Result<(), CacheError> {
        let placed = |slot: PlanSlot| Ok(Some(slot));
        match decision {
            Decision::SubjectSeen => {
                let reason = format!(
                    "another directory user has the same subject {}; only the first is synced",
                    user.subject
                );
                self.report_invalid(&user, reason);
                Ok(())
            }
            Decision::NoEmail(reason) => {
                self.report_invalid(&user, reason);
                Ok(())
            }
            Decision::SkipInactive => {
                self.plan.skipped_inactive += 1;
                Ok(())
            }
            Decision::DeactivateInactive => self.deactivate_inactive(user),
            Decision::Unchanged => self.with_active(user, |planner, _| {
                planner.plan.unchanged += 1;
                Ok(None)
            }),
            Decision::OverLimits(reason) => self.with_active(user, |planner, user| {
                placed(planner.report_skipped(&user, reason))
            }),
            Decision::StillRejected => {
                self.with_active(user, |planner, user| placed(planner.still_rejected(user)?))
            }
            Decision::Update { fingerprint, cause } => self.with_active(user, |planner, user| {
                placed(planner.update(user, fingerprint, cause)?)
            }),
            Decision::Reactivate { update } => self.with_active(user, |planner, user| {
                placed(planner.reactivate(user, update)?)
            }),
            Decision::Adopt { fingerprint } => self.with_active(user, |planner, user| {
                placed(planner.adopt(user, fingerprint))
            }),
            Decision::AdoptAndUpdate { fingerprint } => self.with_active(user, |planner, user| {
                placed(planner.adopt_and_update(user, fingerprint))
            }),
            Decision::Create { fingerprint } => self.with_active(user, |planner, user| {
                placed(planner.create(user, fingerprint))
            }),
            Decision::GatewayAdmin => self.with_active(user, |planner, user| {
                let reason = gateway_admin_reason(&planner.rules.admin_group);
                placed(planner.report_skipped(&user, reason))
            }),
        }
    }

    /// Notes the e-mail of an active user, lets `place` put it in the plan, and
    /// remembers where. `decide` gives these decisions only to users with a usable
    /// e-mail; one without is reported all the same.
    fn with_active(
        &mut self,
        user: DirectoryUser,
        place: impl FnOnce(&mut Self, ActiveUser) -> Result<Option<PlanSlot>, CacheError>,
    ) -> Result<(), CacheError> {
        let user = match ActiveUser::try_from(user) {
            Ok(user) => user,
            Err((user, reason)) => {
                self.report_invalid(&user, reason.to_string());
                return Ok(());
            }
        };
        let position = self.emails.add(&user.profile.email);
        if let Some(slot) = place(self, user)? {
            self.slots.push((position, slot));
        }
        Ok(())
    }

    fn report_skipped(&mut self, user: &ActiveUser, reason: String) -> PlanSlot {
        self.plan.invalid.push(Problem {
            label: user.profile.email.to_string(),
            reason,
        });
        PlanSlot::Invalid(self.plan.invalid.len() - 1)
    }

    fn report_invalid(&mut self, user: &DirectoryUser, reason: String) -> PlanSlot {
        self.plan.invalid.push(problem(user, reason));
        PlanSlot::Invalid(self.plan.invalid.len() - 1)
    }

    /// Counted as inactive, and deactivated.
    fn deactivate_inactive(&mut self, user: DirectoryUser) -> Result<(), CacheError> {
        self.plan.skipped_inactive += 1;
        let record = self.records.record(&user.subject)?;
        let deactivation = deactivation(user.subject, record, "inactive in the directory");
        self.plan.deactivations.push(deactivation);
        Ok(())
    }

    /// Reported with the gateway's message from the record; an admin made in the
    /// gateway is reported as skipped.
    fn still_rejected(&mut self, user: ActiveUser) -> Result<PlanSlot, CacheError> {
        let record = self.records.record(&user.subject)?;
        let detail = record.detail.as_deref().unwrap_or("no message");
        if detail.contains(GATEWAY_ADMIN) && !self.rules.allow_admin_group {
            let reason = gateway_admin_reason(&self.rules.admin_group);
            return Ok(self.report_skipped(&user, reason));
        }
        self.plan.still_rejected.push(Problem {
            label: user.profile.email.to_string(),
            reason: format!("the gateway rejected this user before ({detail}); not resent until its directory data changes"),
        });
        Ok(PlanSlot::StillRejected(self.plan.still_rejected.len() - 1))
    }

    /// A managed user, updated under the e-mail the gateway holds it by.
    fn update(
        &mut self,
        user: ActiveUser,
        fingerprint: Fingerprint,
        cause: UpdateCause,
    ) -> Result<PlanSlot, CacheError> {
        let record = self.records.record(&user.subject)?;
        let ActiveUser { subject, profile } = user;
        Ok(self.push_update(UpdateUser {
            subject,
            key: record.email.clone(),
            kind: ChangeKind::Update,
            reason: update_reason(cause, &record, &profile.email),
            profile: Some(profile),
            record: SubjectRecord {
                fingerprint,
                ..record
            },
        }))
    }

    /// A managed user deactivated before; updated too when `update` is given.
    fn reactivate(
        &mut self,
        user: ActiveUser,
        update: Option<Fingerprint>,
    ) -> Result<PlanSlot, CacheError> {
        let record = self.records.record(&user.subject)?;
        let ActiveUser { subject, profile } = user;
        Ok(self.push_update(UpdateUser {
            subject,
            key: record.email.clone(),
            kind: ChangeKind::Reactivate,
            profile: update.map(|_| profile),
            record: SubjectRecord {
                fingerprint: update.unwrap_or(record.fingerprint),
                deactivated: false,
                ..record
            },
            reason: "active in the directory again".into(),
        }))
    }

    fn adopt(&mut self, user: ActiveUser, fingerprint: Fingerprint) -> PlanSlot {
        let ActiveUser { subject, profile } = user;
        let record = adopted_record(profile.email, fingerprint);
        self.plan.adoptions.push(Adoption { subject, record });
        PlanSlot::Adoption(self.plan.adoptions.len() - 1)
    }

    fn adopt_and_update(&mut self, user: ActiveUser, fingerprint: Fingerprint) -> PlanSlot {
        let ActiveUser { subject, profile } = user;
        self.push_update(UpdateUser {
            subject,
            key: profile.email.clone(),
            kind: ChangeKind::Update,
            record: adopted_record(profile.email.clone(), fingerprint),
            profile: Some(profile),
            reason:
                "already in the gateway with other name, groups or attributes; adopted and updated"
                    .into(),
        })
    }

    fn create(&mut self, user: ActiveUser, fingerprint: Fingerprint) -> PlanSlot {
        let ActiveUser { subject, profile } = user;
        let create = CreateUser {
            subject,
            profile,
            fingerprint,
        };
        PlanSlot::Create(self.plan.creates.push(create))
    }

    fn push_update(&mut self, update: UpdateUser) -> PlanSlot {
        self.plan.updates.push(update);
        PlanSlot::Update(self.plan.updates.len() - 1)
    }

    /// An e-mail held by two active subjects cannot be given to either: the gateway
    /// keys users by e-mail, so whichever came first would silently own both. Such
    /// users are taken back out of the plan and reported, in directory order.
    fn withdraw_shared_emails(&mut self) {
        let shared = self.emails.shared_addresses();
        if shared.is_empty() {
            return;
        }
        let mut withdrawn = FxHashSet::default();
        for &position in &shared {
            match self.slots.binary_search_by_key(&position, |&(p, _)| p) {
                Ok(at) => {
                    withdrawn.insert(self.slots[at].1);
                }
                // Not in a list: counted as unchanged.
                Err(_) => self.plan.unchanged -= 1,
            }
        }
        let plan = &mut self.plan;
        for slot in &withdrawn {
            if let PlanSlot::Create(index) = slot {
                plan.creates.withdraw(*index);
            }
        }
        drop_withdrawn(&mut plan.updates, &withdrawn, PlanSlot::Update);
        drop_withdrawn(&mut plan.adoptions, &withdrawn, PlanSlot::Adoption);
        drop_withdrawn(&mut plan.invalid, &withdrawn, PlanSlot::Invalid);
        drop_withdrawn(
            &mut plan.still_rejected,
            &withdrawn,
            PlanSlot::StillRejected,
        );
        for position in shared {
            let email = self.emails.address(position);
            plan.invalid.push(Problem {
                label: email.to_owned(),
                reason: format!("shares the e-mail {email} with another directory user; neither is synced until one changes"),
            });
        }
    }
}

/// Keeps the deactivations in the plan, unless more are due than
/// `max_deactivations` allows of the `managed` users: then none, and says why.
fn guard_deactivations(
    plan: &mut Plan,
    deactivations: Vec<UpdateUser>,
    managed: usize,
    rules: &Rules,
) {
    let allowed = rules.max_deactivations.allowed(managed);
    if deactivations.len() > allowed && !rules.allow_mass_deactivation {
        plan.deactivation_guard = Some(GuardTripped {
            planned: deactivations.len(),
            allowed,
            managed,
            limit: rules.max_deactivations,
        });
    } else {
        plan.deactivations = deactivations;
    }
}

/// Removes the entries of `list` that `withdrawn` names through `slot_of`.
fn drop_withdrawn<T>(
    list: &mut Vec<T>,
    withdrawn: &FxHashSet<PlanSlot>,
    slot_of: fn(usize) -> PlanSlot,
) {
    let mut index = 0;
    list.retain(|_| {
        index += 1;
        !withdrawn.contains(&slot_of(index - 1))
    });
}

/// An active user with a usable e-mail, as its subject and the profile to send.
struct ActiveUser {
    subject: Subject,
    profile: Profile,
}

impl TryFrom<DirectoryUser> for ActiveUser {
    /// The user back, and why its e-mail is unusable.
    type Error = (DirectoryUser, EmailError);

    fn try_from(user: DirectoryUser) -> Result<Self, Self::Error> {
        let DirectoryUser {
            subject,
            email,
            name,
            groups,
            slack_id,
            picture,
            active,
        } = user;
        match email {
            Ok(email) => Ok(Self {
                subject,
                profile: Profile {
                    email,
                    name,
                    groups,
                    slack_id,
                    picture,
                },
            }),
            Err(reason) => {
                let user = DirectoryUser {
                    subject,
                    email: Err(reason.clone()),
                    name,
                    groups,
                    slack_id,
                    picture,
                    active,
                };
                Err((user, reason))
            }
        }
    }
}

/// What the cache records of a user idsync adopts (`SubjectState::Adopted`).
fn adopted_record(email: Email, fingerprint: Fingerprint) -> SubjectRecord {
    SubjectRecord {
        email,
        state: SubjectState::Adopted,
        fingerprint,
        detail: None,
        deactivated: false,
        updated_at: 0,
    }
}

/// The records of the subjects a change set removed that idsync keeps active.
fn removed_records(
    records: &mut Records,
    removed: Vec<Subject>,
) -> Result<Vec<(Subject, SubjectRecord)>, CacheError> {
    let mut leavers = Vec::new();
    for subject in removed {
        if let Taken::Record(summary) = records.take(&subject) {
            if summary.is_kept_active() {
                let record = records.record(&subject)?;
                leavers.push((subject, record));
            }
        }
    }
    Ok(leavers)
}

fn deactivation(subject: Subject, record: SubjectRecord, reason: &str) -> UpdateUser {
    UpdateUser {
        subject,
        key: record.email.clone(),
        kind: ChangeKind::Deactivate,
        profile: None,
        record: SubjectRecord {
            deactivated: true,
            ..record
        },
        reason: reason.into(),
    }
}

/// Why a managed user is updated, in words. `email` is the directory's.
fn update_reason(cause: UpdateCause, record: &SubjectRecord, email: &Email) -> String {
    if cause == UpdateCause::AdoptedUnverified {
        "found in the gateway earlier; checked against the directory".into()
    } else if record.email != *email {
        format!(
            "changed in the directory; its e-mail changed to {email}, but the gateway keeps users by e-mail, so it stays {}",
            record.email
        )
    } else {
        "name, groups or attributes changed in the directory".into()
    }
}

/// The complete user to `PUT`: the gateway's current user with idsync's fields
/// replaced (PUT is a full replace, so everything else is carried over). The admin
/// group is kept as the gateway has it unless the IdP owns it (`allow_admin_group`).
pub fn merged(
    current: &GatewayUser,
    profile: Option<&Profile>,
    status: Option<&str>,
    rules: &Rules,
) -> GatewayUser {
    let mut user = current.clone();
    if let Some(profile) = profile {
        if let Some(name) = &profile.name {
            user.name = name.clone();
        }
        user.groups = profile.groups.iter().map(|g| g.to_string()).collect();
        if !rules.allow_admin_group && current.groups.contains(&rules.admin_group) {
            user.groups.push(rules.admin_group.clone());
        }
        if rules.owns_slack_id {
            user.slack_id = profile.slack_id.clone().unwrap_or_default();
        }
        if rules.owns_picture {
            user.picture = profile.picture.clone().unwrap_or_default();
        }
    }
    user.groups.sort();
    user.groups.dedup();
    if let Some(status) = status {
        user.status = status.into();
    }
    // An empty status is a 500 on PUT.
    if user.status.is_empty() {
        user.status = "invited".into();
    }
    user
}

fn problem(user: &DirectoryUser, reason: String) -> Problem {
    Problem {
        label: user.label(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupName, UnusableEntry};

    /// An active user in two groups, named after its subject.
    pub(super) fn user(subject: &str, email: &str) -> DirectoryUser {
        DirectoryUser {
            subject: Subject::new(subject),
            active: true,
            email: Email::parse(email),
            name: Some(format!("User {subject}")),
            groups: vec![GroupName::new("dba"), GroupName::new("sre")],
            slack_id: None,
            picture: None,
        }
    }

    /// A directory as a source lists it.
    struct Directory {
        users: Vec<DirectoryUser>,
        unusable: Vec<UnusableEntry>,
    }

    impl Directory {
        fn len(&self) -> usize {
            self.users.len() + self.unusable.len()
        }
    }

    fn directory(users: Vec<DirectoryUser>) -> Directory {
        Directory {
            users,
            unusable: Vec::new(),
        }
    }

    /// Plans a whole directory at once.
    fn plan(
        dir: &Directory,
        cache: &Records,
        inventory: Option<&HashMap<String, GatewayUser>>,
        rules: &Rules,
    ) -> Plan {
        let mut planner = Planner::new(cache.clone(), inventory.cloned(), rules);
        planner.add(dir.users.clone()).expect("add");
        let (plan, _) = planner
            .finish(dir.unusable.clone(), Scope::Complete)
            .expect("finish");
        plan
    }

    fn record_of(user: &DirectoryUser, state: SubjectState) -> SubjectRecord {
        SubjectRecord {
            email: user.email.clone().expect("email"),
            state,
            fingerprint: user.fingerprint(),
            detail: Some("422: invalid email".into()),
            deactivated: false,
            updated_at: 0,
        }
    }

    fn cached(user: &DirectoryUser, state: SubjectState) -> Records {
        [(user.subject.clone(), record_of(user, state))]
            .into_iter()
            .collect()
    }

    fn managed(users: &[DirectoryUser]) -> Records {
        users
            .iter()
            .map(|u| (u.subject.clone(), record_of(u, SubjectState::Created)))
            .collect()
    }

    fn rules() -> Rules {
        Rules::default()
    }

    fn lifecycle() -> Rules {
        Rules {
            update_existing: true,
            deprovision: Deprovision::Deactivate,
            max_deactivations: DeactivationLimit::Count(100),
            ..Rules::default()
        }
    }

    fn run(dir: &Directory, cache: &Records, rules: &Rules) -> Plan {
        plan(dir, cache, None, rules)
    }

    fn total(plan: &Plan) -> usize {
        plan.creates.len()
            + plan.updates.len()
            + plan.adoptions.len()
            + plan.unchanged
            + plan.skipped_inactive
            + plan.invalid.len()
            + plan.still_rejected.len()
    }

    fn gateway_user(email: &str, name: &str, groups: &[&str]) -> GatewayUser {
        GatewayUser {
            id: email.into(),
            email: email.into(),
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            status: "invited".into(),
            ..GatewayUser::default()
        }
    }

    #[test]
    fn plan_new_user_is_created_with_its_groups() {
        let ann = user("s1", "Ann@X.com");
        let plan = run(&directory(vec![ann.clone()]), &Records::default(), &rules());
        assert_eq!(plan.creates.len(), 1);
        let create = plan.creates.iter().next().expect("one create");
        assert_eq!(create.profile.email.as_str(), "ann@x.com");
        assert_eq!(create.profile.groups, ann.groups);
        assert_eq!(create.fingerprint, ann.fingerprint());
    }

    #[test]
    fn plan_inactive_user_is_skipped() {
        let mut ann = user("s1", "ann@x.com");
        ann.active = false;
        let plan = run(&directory(vec![ann]), &Records::default(), &lifecycle());
        assert_eq!(
            (
                plan.creates.len(),
                plan.skipped_inactive,
                plan.deactivations.len()
            ),
            (0, 1, 0)
        );
    }

    #[test]
    fn plan_created_or_adopted_user_is_unchanged() {
        let ann = user("s1", "ann@x.com");
        for state in [SubjectState::Created, SubjectState::Adopted] {
            let plan = run(
                &directory(vec![ann.clone()]),
                &cached(&ann, state),
                &lifecycle(),
            );
            assert_eq!(
                (plan.creates.len(), plan.updates.len(), plan.unchanged),
                (0, 0, 1),
                "{state:?}"
            );
        }
    }

    #[test]
    fn plan_rejected_user_is_not_resent_while_unchanged() {
        let ann = user("s1", "ann@x.com");
        let plan = run(
            &directory(vec![ann.clone()]),
            &cached(&ann, SubjectState::Rejected),
            &rules(),
        );
        assert!(plan.creates.is_empty());
        assert_eq!(plan.still_rejected.len(), 1);
        assert!(plan.still_rejected[0].reason.contains("422: invalid email"));
    }

    #[test]
    fn plan_rejected_user_is_resent_with_retry_rejected() {
        let ann = user("s1", "ann@x.com");
        let retrying = Rules {
            retry_rejected: true,
            ..rules()
        };
        let plan = run(
            &directory(vec![ann.clone()]),
            &cached(&ann, SubjectState::Rejected),
            &retrying,
        );
        assert_eq!(plan.creates.len(), 1);
        assert!(plan.still_rejected.is_empty());
    }

    #[test]
    fn plan_gateway_admin_met_by_a_409_is_reported_as_skipped() {
        let ann = user("s1", "ann@x.com");
        let mut record = record_of(&ann, SubjectState::Rejected);
        record.detail = Some(format!("409: {}", gateway_admin_reason("admin")).into());
        let cache: Records = [(ann.subject.clone(), record)].into_iter().collect();
        let plan = run(&directory(vec![ann]), &cache, &rules());
        assert!(plan.creates.is_empty() && plan.still_rejected.is_empty());
        assert_eq!(plan.invalid.len(), 1);
        assert!(plan.invalid[0].reason.contains(GATEWAY_ADMIN));
    }

    #[test]
    fn plan_rejected_user_is_retried_once_its_data_changed() {
        let ann = user("s1", "ann@x.com");
        let cache = cached(&ann, SubjectState::Rejected);
        let mut renamed = ann.clone();
        renamed.name = Some("Ann Lee".into());
        let plan = run(&directory(vec![renamed]), &cache, &rules());
        assert_eq!(plan.creates.len(), 1);
        assert!(plan.still_rejected.is_empty());
    }

    #[test]
    fn plan_user_without_valid_email_is_reported() {
        let plan = run(
            &directory(vec![user("s1", "not-an-email")]),
            &Records::default(),
            &rules(),
        );
        assert_eq!(plan.invalid.len(), 1);
        assert_eq!(plan.invalid[0].label, "subject s1 (User s1)");
        assert!(plan.invalid[0].reason.contains("not a bare e-mail address"));
    }

    #[test]
    fn plan_shared_email_creates_neither() {
        let users = vec![
            user("s1", "ann@x.com"),
            user("s2", "ANN@x.com"),
            user("s3", "bob@x.com"),
        ];
        let plan = run(&directory(users), &Records::default(), &rules());
        assert_eq!(plan.creates.len(), 1);
        let created: Vec<Subject> = plan.creates.iter().map(|c| c.subject).collect();
        assert_eq!(created, [Subject::new("s3")]);
        assert_eq!(plan.invalid.len(), 2);
        assert!(plan
            .invalid
            .iter()
            .all(|p| p.reason.contains("shares the e-mail ann@x.com")));
    }

    #[test]
    fn plan_shared_email_with_an_inactive_user_is_no_conflict() {
        let mut leaver = user("s1", "ann@x.com");
        leaver.active = false;
        let plan = run(
            &directory(vec![leaver, user("s2", "ann@x.com")]),
            &Records::default(),
            &rules(),
        );
        assert_eq!((plan.creates.len(), plan.skipped_inactive), (1, 1));
    }

    #[test]
    fn plan_values_over_gateway_limits_are_reported() {
        let mut long_group = user("s1", "ann@x.com");
        long_group.groups = vec![GroupName::new(&"g".repeat(181))];
        let mut long_name = user("s2", "bob@x.com");
        long_name.name = Some("n".repeat(256));
        let mut long_slack = user("s3", "cy@x.com");
        long_slack.slack_id = Some("U".repeat(51));
        let mut at_limits = user("s4", "di@x.com");
        at_limits.groups = vec![GroupName::new(&"g".repeat(180))];
        at_limits.name = Some("n".repeat(255));
        at_limits.slack_id = Some("U".repeat(50));
        let dir = directory(vec![long_group, long_name, long_slack, at_limits]);
        let plan = run(&dir, &Records::default(), &rules());
        assert_eq!(plan.creates.len(), 1);
        let reasons: Vec<&str> = plan.invalid.iter().map(|p| p.reason.as_str()).collect();
        assert!(reasons[0].contains("180 characters"), "{reasons:?}");
        assert!(reasons[1].contains("255 characters"), "{reasons:?}");
        assert!(
            reasons[2].contains("slack_id is longer than the gateway's 50"),
            "{reasons:?}"
        );
    }

    #[test]
    fn plan_unusable_entries_are_reported() {
        let mut dir = directory(vec![user("s1", "ann@x.com")]);
        dir.unusable.push(UnusableEntry {
            label: "bob".into(),
            reason: "has no externalId".into(),
        });
        let plan = run(&dir, &Records::default(), &rules());
        assert_eq!((plan.creates.len(), plan.invalid.len()), (1, 1));
    }

    #[test]
    fn plan_changed_user_is_updated_only_when_updates_are_on() {
        let ann = user("s1", "ann@x.com");
        let cache = cached(&ann, SubjectState::Created);
        let mut moved = ann.clone();
        moved.groups = vec![GroupName::new("payments")];
        let plan_off = run(&directory(vec![moved.clone()]), &cache, &rules());
        assert_eq!((plan_off.updates.len(), plan_off.unchanged), (0, 1));
        let plan_on = run(&directory(vec![moved.clone()]), &cache, &lifecycle());
        assert_eq!(plan_on.updates.len(), 1);
        let update = &plan_on.updates[0];
        assert_eq!(update.kind, ChangeKind::Update);
        assert_eq!(update.record.fingerprint, moved.fingerprint());
        assert_eq!(update.record.state, SubjectState::Created);
        assert_eq!(
            update.profile.as_ref().map(|p| p.groups.clone()),
            Some(moved.groups)
        );
    }

    #[test]
    fn plan_leaver_is_deactivated_only_when_deprovisioning_is_on() {
        let (ann, bob) = (user("s1", "ann@x.com"), user("s2", "bob@x.com"));
        let cache = managed(&[ann.clone(), bob]);
        let plan_off = run(&directory(vec![ann.clone()]), &cache, &rules());
        assert!(plan_off.deactivations.is_empty());
        let plan_on = run(&directory(vec![ann]), &cache, &lifecycle());
        assert_eq!(plan_on.deactivations.len(), 1);
        let off = &plan_on.deactivations[0];
        assert_eq!(
            (off.key.as_str(), off.kind),
            ("bob@x.com", ChangeKind::Deactivate)
        );
        assert!(off.record.deactivated && off.profile.is_none());
        assert_eq!(off.reason, "no longer in the directory");
    }

    #[test]
    fn plan_change_set_deactivates_only_the_subjects_it_removes() {
        let (ann, bob, cy) = (
            user("s1", "ann@x.com"),
            user("s2", "bob@x.com"),
            user("s3", "cy@x.com"),
        );
        let cache = managed(&[ann.clone(), bob, cy]);
        let mut renamed = ann;
        renamed.name = Some("Ann Lee".into());
        let rules = lifecycle();
        let mut planner = Planner::new(cache.clone(), None, &rules);
        planner.add(vec![renamed]).expect("add");
        // Bob is absent from the change set: unchanged, not a leaver. Cy is removed,
        // and so is a subject idsync never managed.
        let removed = vec![Subject::new("s3"), Subject::new("never-seen")];
        let (plan, _) = planner
            .finish(Vec::new(), Scope::Changes { removed })
            .expect("finish");
        assert_eq!(plan.updates.len(), 1);
        let leavers: Vec<&str> = plan.deactivations.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(leavers, ["cy@x.com"]);
    }

    #[test]
    fn plan_inactive_managed_user_is_deactivated_and_still_counted_inactive() {
        let mut ann = user("s1", "ann@x.com");
        let cache = cached(&ann, SubjectState::Adopted);
        ann.active = false;
        let plan = run(&directory(vec![ann]), &cache, &lifecycle());
        assert_eq!((plan.skipped_inactive, plan.deactivations.len()), (1, 1));
        assert_eq!(plan.deactivations[0].reason, "inactive in the directory");
    }

    #[test]
    fn plan_never_touches_users_it_does_not_manage() {
        let ann = user("s1", "ann@x.com");
        // Rejected users were never created; deactivated ones are done.
        let mut cache = cached(&ann, SubjectState::Rejected);
        let mut done = record_of(&user("s2", "bob@x.com"), SubjectState::Created);
        done.deactivated = true;
        cache.insert(Subject::new("s2"), done);
        let plan = run(&directory(Vec::new()), &cache, &lifecycle());
        assert!(plan.deactivations.is_empty() && plan.deactivation_guard.is_none());
    }

    #[test]
    fn plan_returning_user_is_reactivated() {
        let ann = user("s1", "ann@x.com");
        let cache: Records = [(
            ann.subject.clone(),
            SubjectRecord {
                deactivated: true,
                ..record_of(&ann, SubjectState::Created)
            },
        )]
        .into_iter()
        .collect();
        let plan = run(&directory(vec![ann.clone()]), &cache, &lifecycle());
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.updates[0].kind, ChangeKind::Reactivate);
        assert!(!plan.updates[0].record.deactivated);
        // Still inactive in the directory: nothing to do.
        let mut still_gone = ann;
        still_gone.active = false;
        let plan = run(&directory(vec![still_gone]), &cache, &lifecycle());
        assert!(plan.updates.is_empty() && plan.deactivations.is_empty());
    }

    #[test]
    fn plan_guard_stops_a_mass_deactivation() {
        let users: Vec<DirectoryUser> = (0..20)
            .map(|i| user(&format!("s{i}"), &format!("u{i}@x.com")))
            .collect();
        let cache = managed(&users);
        let truncated = directory(users[..15].to_vec());
        let guarded = Rules {
            max_deactivations: DeactivationLimit::Percent(10),
            ..lifecycle()
        };
        let plan = run(&truncated, &cache, &guarded);
        assert!(
            plan.deactivations.is_empty(),
            "nothing is deactivated past the limit"
        );
        let guard = plan.deactivation_guard.expect("guard tripped");
        assert_eq!((guard.planned, guard.allowed, guard.managed), (5, 2, 20));
        assert!(guard.to_string().contains("--allow-mass-deactivation"));

        let by_count = Rules {
            max_deactivations: DeactivationLimit::Count(5),
            ..lifecycle()
        };
        assert_eq!(
            run(&truncated, &cache, &by_count).deactivations.len(),
            5,
            "at the limit is allowed"
        );
        let forced = Rules {
            allow_mass_deactivation: true,
            ..guarded
        };
        assert_eq!(run(&truncated, &cache, &forced).deactivations.len(), 5);
    }

    #[test]
    fn plan_empty_directory_never_deactivates_everyone_by_default() {
        let users: Vec<DirectoryUser> = (0..3)
            .map(|i| user(&format!("s{i}"), &format!("u{i}@x.com")))
            .collect();
        let rules = Rules {
            max_deactivations: DeactivationLimit::Percent(10),
            ..lifecycle()
        };
        let plan = run(&directory(Vec::new()), &managed(&users), &rules);
        assert!(plan.deactivations.is_empty());
        assert!(plan.deactivation_guard.is_some());
    }

    #[test]
    fn plan_adopts_matching_gateway_users_instead_of_creating() {
        let ann = user("s1", "ann@x.com");
        let inventory = HashMap::from([(
            "ann@x.com".to_owned(),
            gateway_user("ann@x.com", "User s1", &["dba", "sre"]),
        )]);
        let plan = plan(
            &directory(vec![ann.clone()]),
            &Records::default(),
            Some(&inventory),
            &lifecycle(),
        );
        assert!(plan.creates.is_empty() && plan.updates.is_empty());
        assert_eq!(plan.adoptions.len(), 1);
        assert_eq!(plan.adoptions[0].record.state, SubjectState::Adopted);
        assert_eq!(plan.adoptions[0].record.fingerprint, ann.fingerprint());
    }

    #[test]
    fn plan_never_adopts_an_admin_made_in_the_gateway() {
        let ann = user("s1", "ann@x.com");
        let inventory = HashMap::from([(
            "ann@x.com".to_owned(),
            gateway_user("ann@x.com", "Ann", &["admin", "old-team"]),
        )]);
        let plan = plan(
            &directory(vec![ann]),
            &Records::default(),
            Some(&inventory),
            &lifecycle(),
        );
        assert!(plan.creates.is_empty() && plan.updates.is_empty() && plan.adoptions.is_empty());
        assert_eq!(plan.invalid.len(), 1, "reported as skipped");
        assert_eq!(plan.invalid[0].label, "ann@x.com");
        assert!(
            plan.invalid[0].reason.contains("admin group \"admin\""),
            "{}",
            plan.invalid[0].reason
        );
    }

    #[test]
    fn plan_adopted_user_that_differs_is_updated_when_updates_are_on() {
        let ann = user("s1", "ann@x.com");
        let inventory = HashMap::from([(
            "ann@x.com".to_owned(),
            gateway_user("ann@x.com", "Ann", &["old-team"]),
        )]);
        let dir = directory(vec![ann]);
        let updating = plan(&dir, &Records::default(), Some(&inventory), &lifecycle());
        assert_eq!((updating.updates.len(), updating.adoptions.len()), (1, 0));
        let not_updating = plan(&dir, &Records::default(), Some(&inventory), &rules());
        assert_eq!(not_updating.adoptions.len(), 1);
        assert_eq!(
            not_updating.adoptions[0].record.fingerprint,
            Fingerprint::UNVERIFIED
        );
    }

    #[test]
    fn merged_replaces_owned_fields_and_keeps_the_rest() {
        let mut current = gateway_user("ann@x.com", "Old", &["admin", "old-team"]);
        current.slack_id = "U1".into();
        current.picture = "https://pics/ann.png".into();
        current.status = "active".into();
        let profile = Profile {
            email: Email::parse("ann@x.com").expect("email"),
            name: Some("Ann Lee".into()),
            groups: vec![GroupName::new("sre")],
            slack_id: Some("U2".into()),
            picture: None,
        };
        let user = merged(&current, Some(&profile), None, &rules());
        assert_eq!(user.name, "Ann Lee");
        assert_eq!(
            user.groups,
            ["admin", "sre"],
            "admin stays: the gateway owns it"
        );
        assert_eq!(
            (user.slack_id.as_str(), user.status.as_str()),
            ("U1", "active"),
            "slack_id is not mapped"
        );
        let owning = Rules {
            allow_admin_group: true,
            owns_slack_id: true,
            owns_picture: true,
            ..rules()
        };
        let user = merged(&current, Some(&profile), Some("inactive"), &owning);
        assert_eq!(user.groups, ["sre"], "the IdP owns admin when allowed");
        assert_eq!((user.slack_id.as_str(), user.picture.as_str()), ("U2", ""));
        assert_eq!(user.status, "inactive");
        let mut blank = current.clone();
        blank.status = String::new();
        assert_eq!(
            merged(&blank, None, None, &rules()).status,
            "invited",
            "never PUT an empty status"
        );
    }

    #[test]
    fn a_directory_planned_as_it_arrives_gives_the_plan_of_the_whole() {
        let count = 5_000;
        let mut users: Vec<DirectoryUser> = (0..count)
            .map(|i| user(&format!("s{i}"), &format!("u{i}@x.com")))
            .collect();
        // Every third user is managed already; of those, every seventh left.
        let mut cache = managed(&users.iter().step_by(3).cloned().collect::<Vec<_>>());
        // A managed user and a new one share an e-mail, far apart in the listing.
        users[4_001].email = Email::parse("u3@x.com");
        // A managed user that changed, and one rejected before.
        users[6].name = Some("Renamed".into());
        cache.insert(
            users[10].subject.clone(),
            record_of(&users[10], SubjectState::Rejected),
        );
        let listed: Vec<DirectoryUser> = users
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 21 != 0)
            .map(|(_, user)| user)
            .collect();
        let dir = directory(listed);
        let rules = lifecycle_without_a_guard();
        let whole = plan(&dir, &cache, None, &rules);
        assert_eq!(total(&whole), dir.len());
        let leavers = (0..count).filter(|i| i % 21 == 0).count();
        assert_eq!(whole.deactivations.len(), leavers);
        assert_eq!(whole.updates.len(), 1);
        assert_eq!(whole.still_rejected.len(), 1);
        let shared: Vec<&str> = whole.invalid.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(shared, ["u3@x.com", "u3@x.com"]);
        let created: Vec<String> = whole
            .creates
            .iter()
            .map(|c| c.subject.as_str().to_owned())
            .collect();
        let expected: Vec<&str> = dir
            .users
            .iter()
            .map(|u| u.subject.as_str())
            .filter(|s| cache.summary(&Subject::new(*s)).is_none() && *s != "s4001")
            .collect();
        assert_eq!(created, expected);

        for chunk in [1, 7, 1_000] {
            let mut planner = Planner::new(cache.clone(), None, &rules);
            for part in dir.users.chunks(chunk) {
                planner.add(part.to_vec()).expect("add");
            }
            assert_eq!(
                planner
                    .finish(Vec::new(), Scope::Complete)
                    .expect("finish")
                    .0,
                whole,
                "chunks of {chunk}"
            );
        }
    }

    fn lifecycle_without_a_guard() -> Rules {
        Rules {
            max_deactivations: DeactivationLimit::Count(u32::MAX),
            ..lifecycle()
        }
    }

    #[test]
    fn plan_a_subject_listed_twice_is_synced_once() {
        let ann = user("s1", "ann@x.com");
        let twin = user("s1", "other@x.com");
        let cache = cached(&ann, SubjectState::Created);
        let plan = run(&directory(vec![ann, twin]), &cache, &lifecycle());
        assert_eq!((plan.unchanged, plan.creates.len()), (1, 0));
        assert_eq!(plan.invalid.len(), 1);
        assert_eq!(plan.invalid[0].label, "other@x.com");
        assert!(plan.invalid[0].reason.contains("same subject s1"));
    }

    #[test]
    fn plan_accounts_for_every_directory_entry_exactly_once() {
        let ann = user("s1", "ann@x.com");
        let mut inactive = user("s2", "bo@x.com");
        inactive.active = false;
        let mut moved = user("s7", "mo@x.com");
        let mut cache = cached(&ann, SubjectState::Created);
        cache.insert(
            moved.subject.clone(),
            record_of(&moved, SubjectState::Created),
        );
        moved.groups.clear();
        let users = vec![
            ann,
            inactive,
            user("s3", "bad"),
            user("s4", "dup@x.com"),
            user("s5", "dup@x.com"),
            user("s6", "new@x.com"),
            moved,
        ];
        let dir = directory(users);
        let plan = run(&dir, &cache, &lifecycle());
        assert_eq!(total(&plan), dir.len());
        assert_eq!((plan.creates.len(), plan.updates.len()), (1, 1));
    }
}
