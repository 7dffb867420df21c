//! What to do with one directory user: a pure function of the user, what the
//! cache knows of its subject, the gateway's user of the same e-mail (read only
//! when the cache is empty) and the rules. [`Planner`](super::Planner) records
//! the decision in the plan.

use crate::cache::{RecordSummary, Taken};
use crate::config::Deprovision;
use crate::model::{limits, DirectoryUser, Email, Fingerprint, GatewayUser, Profile};

use super::{merged, Rules};

/// What the cache knows of a directory user's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cached {
    /// Never recorded: a user idsync has not met.
    Absent,
    /// Recorded: what decides whether the user needs work. The whole record is
    /// read only for the decisions that need it.
    Recorded(RecordSummary),
    /// Another directory user with this subject came earlier in this run.
    SeenThisRun,
}

impl From<Taken> for Cached {
    fn from(taken: Taken) -> Self {
        match taken {
            Taken::Absent => Self::Absent,
            Taken::Record(summary) => Self::Recorded(summary),
            Taken::AlreadyTaken => Self::SeenThisRun,
        }
    }
}

/// What the plan does with a directory user. The decisions marked *record* need
/// the subject's whole cache record, which the planner reads to carry them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Another directory user has the same subject and came first (possible only
    /// with `subject_attribute = "externalId"`): reported, not synced.
    SubjectSeen,
    /// `active: false` and nothing to change in the gateway: counted, not synced.
    SkipInactive,
    /// `active: false`, and idsync keeps the user active: counted as inactive,
    /// and deactivated (`deprovision = "deactivate"`). *Record.*
    DeactivateInactive,
    /// No usable e-mail: reported, and left out of the shared e-mail check.
    NoEmail(String),
    /// A value over the gateway's column limits: reported.
    OverLimits(String),
    /// Managed and in step with the directory, or changed with updates off.
    Unchanged,
    /// The gateway rejected this data before and it has not changed: reported.
    /// *Record* (for the gateway's message).
    StillRejected,
    /// Managed and changed, with `update_existing`. *Record.*
    Update {
        fingerprint: Fingerprint,
        cause: UpdateCause,
    },
    /// Deactivated by idsync earlier and active in the directory again. With
    /// `update_existing` it is also updated to the directory's data, whose
    /// fingerprint `update` holds. *Record.*
    Reactivate { update: Option<Fingerprint> },
    /// The gateway already has a user with this e-mail: idsync adopts it,
    /// recording this fingerprint (`UNVERIFIED` when updates are off, so that
    /// turning them on compares the user at the next run).
    Adopt { fingerprint: Fingerprint },
    /// Adopted, and updated because the gateway's user differs (`update_existing`).
    AdoptAndUpdate { fingerprint: Fingerprint },
    /// The gateway already has a user with this e-mail in its admin group, and
    /// the IdP does not own that group: reported and left alone, never adopted,
    /// so idsync can never update or deactivate an admin made in the gateway.
    GatewayAdmin,
    /// New to idsync and the gateway, or rejected before and changed since.
    Create { fingerprint: Fingerprint },
}

/// Why a managed user is updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpdateCause {
    /// Adopted earlier without comparing its data (`Fingerprint::UNVERIFIED`).
    AdoptedUnverified,
    /// Its name, groups or mapped attributes changed in the directory.
    Changed,
}

/// Decides what to do with `user`. `gateway` is the gateway's user with the same
/// e-mail, when the gateway's users were read. Allocates only to word a report.
pub(super) fn decide(
    user: &DirectoryUser,
    cached: Cached,
    gateway: Option<&GatewayUser>,
    rules: &Rules,
) -> Decision {
    let summary = match cached {
        Cached::SeenThisRun => return Decision::SubjectSeen,
        Cached::Recorded(summary) => Some(summary),
        Cached::Absent => None,
    };
    if !user.active {
        return decide_inactive(summary, rules);
    }
    let email = match &user.email {
        Ok(email) => email,
        Err(reason) => return Decision::NoEmail(reason.to_string()),
    };
    if let Some(reason) = over_limits(user) {
        return Decision::OverLimits(reason);
    }
    let fingerprint = user.fingerprint();
    match (summary, gateway) {
        (Some(summary), _) if summary.is_managed() => decide_managed(summary, fingerprint, rules),
        (Some(rejected), _) if rejected.fingerprint == fingerprint && !rules.retry_rejected => {
            Decision::StillRejected
        }
        (_, Some(gateway_user)) => decide_adoption(user, email, gateway_user, fingerprint, rules),
        (_, None) => Decision::Create { fingerprint },
    }
}

fn decide_inactive(summary: Option<RecordSummary>, rules: &Rules) -> Decision {
    let kept_active = summary.is_some_and(|summary| summary.is_kept_active());
    if kept_active && rules.deprovision == Deprovision::Deactivate {
        Decision::DeactivateInactive
    } else {
        Decision::SkipInactive
    }
}

/// A user idsync created or adopted, active in the directory.
fn decide_managed(summary: RecordSummary, fingerprint: Fingerprint, rules: &Rules) -> Decision {
    if summary.deactivated {
        let update = rules.update_existing.then_some(fingerprint);
        return Decision::Reactivate { update };
    }
    if !rules.update_existing || summary.fingerprint == fingerprint {
        return Decision::Unchanged;
    }
    let cause = if summary.fingerprint == Fingerprint::UNVERIFIED {
        UpdateCause::AdoptedUnverified
    } else {
        UpdateCause::Changed
    };
    Decision::Update { fingerprint, cause }
}

/// A user the gateway already holds and idsync does not manage yet. Comparing it
/// copies the user's profile: this happens only on a first run.
fn decide_adoption(
    user: &DirectoryUser,
    email: &Email,
    gateway_user: &GatewayUser,
    fingerprint: Fingerprint,
    rules: &Rules,
) -> Decision {
    if !rules.allow_admin_group && gateway_user.groups.contains(&rules.admin_group) {
        return Decision::GatewayAdmin;
    }
    if !rules.update_existing {
        return Decision::Adopt {
            fingerprint: Fingerprint::UNVERIFIED,
        };
    }
    let profile = Profile {
        email: email.clone(),
        name: user.name.clone(),
        groups: user.groups.clone(),
        slack_id: user.slack_id.clone(),
        picture: user.picture.clone(),
    };
    if merged(gateway_user, Some(&profile), None, rules) != *gateway_user {
        Decision::AdoptAndUpdate { fingerprint }
    } else {
        Decision::Adopt { fingerprint }
    }
}

/// Values the gateway's database would refuse with a 500 (see docs/gateway-api.md).
fn over_limits(user: &DirectoryUser) -> Option<String> {
    let too_long = |value: &Option<String>, limit: usize| {
        value
            .as_deref()
            .is_some_and(|v| limits::longer_than(v, limit))
    };
    let over = |field: &str, limit: usize| {
        Some(format!(
            "{field} is longer than the gateway's {limit} characters"
        ))
    };
    if too_long(&user.name, limits::NAME) {
        return over("name", limits::NAME);
    }
    if too_long(&user.slack_id, limits::SLACK_ID) {
        return over("slack_id", limits::SLACK_ID);
    }
    if too_long(&user.picture, limits::PICTURE) {
        return over("picture", limits::PICTURE);
    }
    let group = user
        .groups
        .iter()
        .find(|group| limits::longer_than(group.as_str(), limits::GROUP_NAME))?;
    let start: String = group.as_str().chars().take(40).collect();
    over(&format!("group {start:?}…"), limits::GROUP_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::SubjectState;
    use crate::model::GroupName;
    use crate::plan::tests::user;

    fn ann() -> DirectoryUser {
        user("s1", "ann@x.com")
    }

    fn inactive(mut user: DirectoryUser) -> DirectoryUser {
        user.active = false;
        user
    }

    fn renamed(mut user: DirectoryUser) -> DirectoryUser {
        user.name = Some("Ann Lee".into());
        user
    }

    /// What the cache knows of a subject recorded with `user`'s data.
    fn recorded(user: &DirectoryUser, state: SubjectState) -> Cached {
        recorded_as(state, user.fingerprint(), false)
    }

    fn recorded_as(state: SubjectState, fingerprint: Fingerprint, deactivated: bool) -> Cached {
        Cached::Recorded(RecordSummary {
            state,
            fingerprint,
            deactivated,
        })
    }

    /// The gateway's copy of `user`, as idsync would send it.
    fn in_gateway(user: &DirectoryUser) -> GatewayUser {
        GatewayUser {
            id: user.label(),
            email: user.label(),
            name: user.name.clone().unwrap_or_default(),
            groups: user.groups.iter().map(|g| g.to_string()).collect(),
            status: "invited".into(),
            ..GatewayUser::default()
        }
    }

    fn off() -> Rules {
        Rules::default()
    }

    fn updating() -> Rules {
        Rules {
            update_existing: true,
            ..Rules::default()
        }
    }

    fn owning_admin() -> Rules {
        Rules {
            allow_admin_group: true,
            ..updating()
        }
    }

    fn retrying() -> Rules {
        Rules {
            retry_rejected: true,
            ..Rules::default()
        }
    }

    fn deprovisioning() -> Rules {
        Rules {
            deprovision: Deprovision::Deactivate,
            ..Rules::default()
        }
    }

    /// One rule: a directory user, what the cache and the gateway know of it, the
    /// rules, and the decision.
    struct Row {
        rule: &'static str,
        user: DirectoryUser,
        cached: Cached,
        gateway: Option<GatewayUser>,
        rules: Rules,
        expected: Decision,
    }

    fn row(
        rule: &'static str,
        user: DirectoryUser,
        cached: Cached,
        rules: Rules,
        expected: Decision,
    ) -> Row {
        Row {
            rule,
            user,
            cached,
            gateway: None,
            rules,
            expected,
        }
    }

    fn check(rows: Vec<Row>) {
        for row in rows {
            let decision = decide(&row.user, row.cached, row.gateway.as_ref(), &row.rules);
            assert_eq!(decision, row.expected, "{}", row.rule);
        }
    }

    #[test]
    fn decide_new_users() {
        let fingerprint = ann().fingerprint();
        check(vec![
            row(
                "a new active user is created",
                ann(),
                Cached::Absent,
                off(),
                Decision::Create { fingerprint },
            ),
            row(
                "a new inactive user is skipped",
                inactive(ann()),
                Cached::Absent,
                deprovisioning(),
                Decision::SkipInactive,
            ),
            row(
                "a subject met earlier in the run is reported",
                ann(),
                Cached::SeenThisRun,
                off(),
                Decision::SubjectSeen,
            ),
            row(
                "a subject met earlier is reported even when inactive",
                inactive(ann()),
                Cached::SeenThisRun,
                off(),
                Decision::SubjectSeen,
            ),
        ]);
    }

    #[test]
    fn decide_managed_users() {
        let ann = ann();
        let (old, new) = (ann.fingerprint(), renamed(ann.clone()).fingerprint());
        let deactivated = recorded_as(SubjectState::Created, old, true);
        let unverified = recorded_as(SubjectState::Adopted, Fingerprint::UNVERIFIED, false);
        let created = recorded(&ann, SubjectState::Created);
        check(vec![
            row(
                "created and unchanged",
                ann.clone(),
                created,
                updating(),
                Decision::Unchanged,
            ),
            row(
                "adopted and unchanged",
                ann.clone(),
                recorded(&ann, SubjectState::Adopted),
                updating(),
                Decision::Unchanged,
            ),
            row(
                "changed, with updates off",
                renamed(ann.clone()),
                created,
                off(),
                Decision::Unchanged,
            ),
            row(
                "changed, with updates on",
                renamed(ann.clone()),
                created,
                updating(),
                Decision::Update {
                    fingerprint: new,
                    cause: UpdateCause::Changed,
                },
            ),
            row(
                "adopted unverified, with updates on: compared",
                ann.clone(),
                unverified,
                updating(),
                Decision::Update {
                    fingerprint: old,
                    cause: UpdateCause::AdoptedUnverified,
                },
            ),
            row(
                "adopted unverified, with updates off",
                ann.clone(),
                unverified,
                off(),
                Decision::Unchanged,
            ),
            row(
                "deactivated and returning, with updates off",
                renamed(ann.clone()),
                deactivated,
                off(),
                Decision::Reactivate { update: None },
            ),
            row(
                "deactivated and returning, with updates on",
                renamed(ann.clone()),
                deactivated,
                updating(),
                Decision::Reactivate { update: Some(new) },
            ),
        ]);
    }

    #[test]
    fn decide_inactive_managed_users() {
        let ann = ann();
        let created = recorded(&ann, SubjectState::Created);
        let deactivated = recorded_as(SubjectState::Created, ann.fingerprint(), true);
        let rejected = recorded(&ann, SubjectState::Rejected);
        let gone = inactive(ann.clone());
        check(vec![
            row(
                "inactive and managed, deprovisioning on",
                gone.clone(),
                created,
                deprovisioning(),
                Decision::DeactivateInactive,
            ),
            row(
                "inactive and adopted, deprovisioning on",
                gone.clone(),
                recorded(&ann, SubjectState::Adopted),
                deprovisioning(),
                Decision::DeactivateInactive,
            ),
            row(
                "inactive and managed, deprovisioning off",
                gone.clone(),
                created,
                off(),
                Decision::SkipInactive,
            ),
            row(
                "inactive and deactivated already",
                gone.clone(),
                deactivated,
                deprovisioning(),
                Decision::SkipInactive,
            ),
            row(
                "inactive and rejected: never managed",
                gone,
                rejected,
                deprovisioning(),
                Decision::SkipInactive,
            ),
        ]);
    }

    #[test]
    fn decide_rejected_users() {
        let ann = ann();
        let rejected = recorded(&ann, SubjectState::Rejected);
        let fingerprint = renamed(ann.clone()).fingerprint();
        check(vec![
            row(
                "rejected and unchanged: not resent",
                ann.clone(),
                rejected,
                updating(),
                Decision::StillRejected,
            ),
            row(
                "rejected and unchanged, with --retry-rejected: resent",
                ann.clone(),
                rejected,
                retrying(),
                Decision::Create {
                    fingerprint: ann.fingerprint(),
                },
            ),
            row(
                "managed and unchanged, with --retry-rejected: still unchanged",
                ann.clone(),
                recorded(&ann, SubjectState::Created),
                retrying(),
                Decision::Unchanged,
            ),
            Row {
                gateway: Some(in_gateway(&ann)),
                ..row(
                    "rejected, unchanged, in the gateway, with --retry-rejected: adopted",
                    ann.clone(),
                    rejected,
                    retrying(),
                    Decision::Adopt {
                        fingerprint: Fingerprint::UNVERIFIED,
                    },
                )
            },
            row(
                "rejected and changed: created again",
                renamed(ann.clone()),
                rejected,
                off(),
                Decision::Create { fingerprint },
            ),
            Row {
                gateway: Some(in_gateway(&ann)),
                ..row(
                    "rejected, changed and in the gateway: adopted",
                    renamed(ann.clone()),
                    rejected,
                    off(),
                    Decision::Adopt {
                        fingerprint: Fingerprint::UNVERIFIED,
                    },
                )
            },
        ]);
    }

    #[test]
    fn decide_users_the_gateway_has() {
        let ann = ann();
        let fingerprint = ann.fingerprint();
        let adopted = |rule, gateway, rules, expected| Row {
            gateway: Some(gateway),
            ..row(rule, ann.clone(), Cached::Absent, rules, expected)
        };
        let mut other_groups = in_gateway(&ann);
        other_groups.groups = vec!["old-team".into()];
        let mut an_admin = in_gateway(&ann);
        an_admin.groups.insert(0, "admin".into());
        let managed = recorded(&ann, SubjectState::Created);
        check(vec![
            adopted(
                "the same, with updates on: adopted as compared",
                in_gateway(&ann),
                updating(),
                Decision::Adopt { fingerprint },
            ),
            adopted(
                "with updates off: adopted, unverified",
                in_gateway(&ann),
                off(),
                Decision::Adopt {
                    fingerprint: Fingerprint::UNVERIFIED,
                },
            ),
            adopted(
                "different, with updates on: adopted and updated",
                other_groups.clone(),
                updating(),
                Decision::AdoptAndUpdate { fingerprint },
            ),
            adopted(
                "different, with updates off: adopted, unverified",
                other_groups,
                off(),
                Decision::Adopt {
                    fingerprint: Fingerprint::UNVERIFIED,
                },
            ),
            adopted(
                "an admin made in the gateway, with updates on: left alone",
                an_admin.clone(),
                updating(),
                Decision::GatewayAdmin,
            ),
            adopted(
                "an admin made in the gateway, with updates off: left alone",
                an_admin.clone(),
                off(),
                Decision::GatewayAdmin,
            ),
            adopted(
                "an admin, when the IdP owns the admin group: adopted, admin follows the IdP",
                an_admin.clone(),
                owning_admin(),
                Decision::AdoptAndUpdate { fingerprint },
            ),
            adopted(
                "an admin under another admin group name: adopted",
                an_admin,
                Rules {
                    admin_group: "root".into(),
                    ..updating()
                },
                Decision::AdoptAndUpdate { fingerprint },
            ),
            Row {
                gateway: Some(in_gateway(&ann)),
                ..row(
                    "managed already: the cache decides",
                    ann.clone(),
                    managed,
                    updating(),
                    Decision::Unchanged,
                )
            },
        ]);
    }

    #[test]
    fn decide_unusable_users() {
        let no_email = user("s1", "not-an-email");
        let reason = no_email.email.clone().expect_err("invalid").to_string();
        let mut long_name = ann();
        long_name.name = Some("n".repeat(256));
        let mut long_group = ann();
        long_group.groups = vec![GroupName::new(&"g".repeat(181))];
        let group_reason = format!(
            "group {:?}… is longer than the gateway's 180 characters",
            "g".repeat(40)
        );
        let mut long_picture = ann();
        long_picture.picture = Some("p".repeat(2049));
        let managed = recorded(&ann(), SubjectState::Created);
        let name_reason = "name is longer than the gateway's 255 characters";
        check(vec![
            row(
                "no usable e-mail",
                no_email.clone(),
                Cached::Absent,
                off(),
                Decision::NoEmail(reason),
            ),
            row(
                "no usable e-mail and inactive: inactive first",
                inactive(no_email),
                Cached::Absent,
                off(),
                Decision::SkipInactive,
            ),
            row(
                "a name over the gateway's limit",
                long_name.clone(),
                Cached::Absent,
                off(),
                Decision::OverLimits(name_reason.into()),
            ),
            row(
                "a group over the gateway's limit",
                long_group,
                Cached::Absent,
                off(),
                Decision::OverLimits(group_reason),
            ),
            row(
                "a picture over the gateway's limit",
                long_picture,
                Cached::Absent,
                off(),
                Decision::OverLimits("picture is longer than the gateway's 2048 characters".into()),
            ),
            row(
                "a managed user over a limit: reported, not updated",
                long_name,
                managed,
                updating(),
                Decision::OverLimits(name_reason.into()),
            ),
        ]);
    }

    #[test]
    fn decide_cached_says_what_the_cache_found() {
        let summary = RecordSummary {
            state: SubjectState::Created,
            fingerprint: Fingerprint(7),
            deactivated: false,
        };
        assert_eq!(Cached::from(Taken::Absent), Cached::Absent);
        assert_eq!(
            Cached::from(Taken::Record(summary)),
            Cached::Recorded(summary)
        );
        assert_eq!(Cached::from(Taken::AlreadyTaken), Cached::SeenThisRun);
    }
}
