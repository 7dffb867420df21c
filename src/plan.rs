//! The diff: what the directory says versus what the cache remembers, as a list of
//! actions. Pure: no clock, no I/O, so every rule is a table test below.

use std::collections::HashMap;

use crate::cache::{SubjectRecord, SubjectState};
use crate::model::{limits, DirectoryUser, Email, Fingerprint, GroupName, Subject};
use crate::source::Directory;

/// A user to create in the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateUser {
    pub subject: Subject,
    pub email: Email,
    pub name: Option<String>,
    pub groups: Vec<GroupName>,
    pub fingerprint: Fingerprint,
}

/// A user the run reports instead of syncing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The e-mail, or the subject when there is no usable e-mail.
    pub label: String,
    pub reason: String,
}

/// The run's work. Every directory entry lands in exactly one field.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub creates: Vec<CreateUser>,
    /// Already created or found existing in an earlier run.
    pub unchanged: usize,
    /// `active: false` in the directory.
    pub skipped_inactive: usize,
    /// Unusable data: no valid e-mail, over a gateway limit, a shared e-mail.
    pub invalid: Vec<Problem>,
    /// The gateway rejected this data before and it has not changed since.
    pub still_rejected: Vec<Problem>,
}

pub fn plan(directory: &Directory, cached: &HashMap<Subject, SubjectRecord>) -> Plan {
    let mut plan = Plan::default();
    plan.invalid
        .extend(directory.unusable.iter().map(|entry| Problem {
            label: entry.label.clone(),
            reason: entry.reason.clone(),
        }));

    // An e-mail held by two active subjects cannot be given to either: the gateway
    // keys users by e-mail, so whichever came first would silently own both.
    let mut holders: HashMap<&Email, usize> = HashMap::new();
    for user in directory.users.iter().filter(|u| u.active) {
        if let Ok(email) = &user.email {
            *holders.entry(email).or_default() += 1;
        }
    }

    for user in &directory.users {
        if !user.active {
            plan.skipped_inactive += 1;
            continue;
        }
        let email = match &user.email {
            Ok(email) => email,
            Err(reason) => {
                plan.invalid.push(problem(user, reason.clone()));
                continue;
            }
        };
        if holders.get(email).copied().unwrap_or(0) > 1 {
            plan.invalid.push(problem(
                user,
                format!("shares the e-mail {email} with another directory user; neither is synced until one changes"),
            ));
            continue;
        }
        let record = cached.get(&user.subject);
        if record.is_some_and(|r| matches!(r.state, SubjectState::Created | SubjectState::Existing))
        {
            plan.unchanged += 1;
            continue;
        }
        if let Some(reason) = over_limits(user) {
            plan.invalid.push(problem(user, reason));
            continue;
        }
        let fingerprint = user.fingerprint();
        if let Some(rejected) = record.filter(|r| r.fingerprint == fingerprint) {
            let detail = rejected.detail.as_deref().unwrap_or("no message");
            plan.still_rejected.push(problem(
                user,
                format!("the gateway rejected this user before ({detail}); not resent until its directory data changes"),
            ));
            continue;
        }
        plan.creates.push(CreateUser {
            subject: user.subject.clone(),
            email: email.clone(),
            name: user.name.clone(),
            groups: user.groups.clone(),
            fingerprint,
        });
    }
    plan
}

fn problem(user: &DirectoryUser, reason: String) -> Problem {
    Problem {
        label: user.label(),
        reason,
    }
}

/// Values the gateway's database would refuse with a 500 (see hoop-api-behaviour.md).
fn over_limits(user: &DirectoryUser) -> Option<String> {
    if let Some(name) = &user.name {
        if name.chars().count() > limits::NAME {
            return Some(format!(
                "name is longer than the gateway's {} characters",
                limits::NAME
            ));
        }
    }
    user.groups
        .iter()
        .find(|group| group.as_str().chars().count() > limits::GROUP_NAME)
        .map(|group| {
            format!(
                "group {:?}… is longer than the gateway's {} characters",
                group.as_str().chars().take(40).collect::<String>(),
                limits::GROUP_NAME
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UnusableEntry;

    fn user(subject: &str, email: &str) -> DirectoryUser {
        DirectoryUser {
            subject: Subject::new(subject),
            active: true,
            email: Email::parse(email),
            name: Some(format!("User {subject}")),
            groups: vec![GroupName::new("dba"), GroupName::new("sre")],
        }
    }

    fn directory(users: Vec<DirectoryUser>) -> Directory {
        Directory {
            users,
            unusable: Vec::new(),
        }
    }

    fn cached(user: &DirectoryUser, state: SubjectState) -> HashMap<Subject, SubjectRecord> {
        let record = SubjectRecord {
            email: user.email.clone().expect("email"),
            state,
            fingerprint: user.fingerprint(),
            detail: Some("422: invalid email".into()),
            updated_at: 0,
        };
        HashMap::from([(user.subject.clone(), record)])
    }

    fn total(plan: &Plan) -> usize {
        plan.creates.len()
            + plan.unchanged
            + plan.skipped_inactive
            + plan.invalid.len()
            + plan.still_rejected.len()
    }

    #[test]
    fn plan_new_user_is_created_with_its_groups() {
        let ann = user("s1", "Ann@X.com");
        let plan = plan(&directory(vec![ann.clone()]), &HashMap::new());
        assert_eq!(
            plan.creates,
            vec![CreateUser {
                subject: Subject::new("s1"),
                email: Email::parse("ann@x.com").expect("email"),
                name: Some("User s1".into()),
                groups: ann.groups.clone(),
                fingerprint: ann.fingerprint(),
            }]
        );
    }

    #[test]
    fn plan_inactive_user_is_skipped() {
        let mut ann = user("s1", "ann@x.com");
        ann.active = false;
        let plan = plan(&directory(vec![ann]), &HashMap::new());
        assert_eq!((plan.creates.len(), plan.skipped_inactive), (0, 1));
    }

    #[test]
    fn plan_created_or_existing_user_is_unchanged() {
        let ann = user("s1", "ann@x.com");
        for state in [SubjectState::Created, SubjectState::Existing] {
            let plan = plan(&directory(vec![ann.clone()]), &cached(&ann, state));
            assert_eq!((plan.creates.len(), plan.unchanged), (0, 1), "{state:?}");
        }
    }

    #[test]
    fn plan_rejected_user_is_not_resent_while_unchanged() {
        let ann = user("s1", "ann@x.com");
        let plan = plan(
            &directory(vec![ann.clone()]),
            &cached(&ann, SubjectState::Rejected),
        );
        assert!(plan.creates.is_empty());
        assert_eq!(plan.still_rejected.len(), 1);
        assert!(plan.still_rejected[0].reason.contains("422: invalid email"));
    }

    #[test]
    fn plan_rejected_user_is_retried_once_its_data_changed() {
        let ann = user("s1", "ann@x.com");
        let cache = cached(&ann, SubjectState::Rejected);
        let mut renamed = ann.clone();
        renamed.name = Some("Ann Lee".into());
        let plan = plan(&directory(vec![renamed]), &cache);
        assert_eq!(plan.creates.len(), 1);
        assert!(plan.still_rejected.is_empty());
    }

    #[test]
    fn plan_user_without_valid_email_is_reported() {
        let bad = user("s1", "not-an-email");
        let plan = plan(&directory(vec![bad]), &HashMap::new());
        assert_eq!(plan.invalid.len(), 1);
        assert_eq!(plan.invalid[0].label, "subject s1");
        assert!(plan.invalid[0].reason.contains("not a bare e-mail address"));
    }

    #[test]
    fn plan_shared_email_creates_neither() {
        let users = vec![
            user("s1", "ann@x.com"),
            user("s2", "ANN@x.com"),
            user("s3", "bob@x.com"),
        ];
        let plan = plan(&directory(users), &HashMap::new());
        assert_eq!(plan.creates.len(), 1);
        assert_eq!(plan.creates[0].subject, Subject::new("s3"));
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
        let plan = plan(
            &directory(vec![leaver, user("s2", "ann@x.com")]),
            &HashMap::new(),
        );
        assert_eq!((plan.creates.len(), plan.skipped_inactive), (1, 1));
    }

    #[test]
    fn plan_values_over_gateway_limits_are_reported() {
        let mut long_group = user("s1", "ann@x.com");
        long_group.groups = vec![GroupName::new(&"g".repeat(181))];
        let mut long_name = user("s2", "bob@x.com");
        long_name.name = Some("n".repeat(256));
        let mut at_limits = user("s3", "cy@x.com");
        at_limits.groups = vec![GroupName::new(&"g".repeat(180))];
        at_limits.name = Some("n".repeat(255));
        let plan = plan(
            &directory(vec![long_group, long_name, at_limits]),
            &HashMap::new(),
        );
        assert_eq!(plan.creates.len(), 1);
        assert_eq!(plan.invalid.len(), 2);
        assert!(plan.invalid[0].reason.contains("180 characters"));
        assert!(plan.invalid[1].reason.contains("255 characters"));
    }

    #[test]
    fn plan_unusable_entries_are_reported() {
        let mut dir = directory(vec![user("s1", "ann@x.com")]);
        dir.unusable.push(UnusableEntry {
            label: "bob".into(),
            reason: "has no externalId".into(),
        });
        let plan = plan(&dir, &HashMap::new());
        assert_eq!((plan.creates.len(), plan.invalid.len()), (1, 1));
    }

    #[test]
    fn plan_accounts_for_every_directory_entry_exactly_once() {
        let ann = user("s1", "ann@x.com");
        let mut inactive = user("s2", "bo@x.com");
        inactive.active = false;
        let users = vec![
            ann.clone(),
            inactive,
            user("s3", "bad"),
            user("s4", "dup@x.com"),
            user("s5", "dup@x.com"),
            user("s6", "new@x.com"),
        ];
        let dir = directory(users);
        let plan = plan(&dir, &cached(&ann, SubjectState::Created));
        assert_eq!(total(&plan), dir.len());
        assert_eq!(plan.creates.len(), 1);
    }
}
