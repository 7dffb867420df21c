//! A page's resources decoded straight into the few fields idsync needs, and
//! normalized: users with their mapped attributes, groups with their members' digests.

use super::*;

/// Turns a page's resources, whole or split, into what the listing yields, one
/// for each, or says why it cannot; with a whole page, also reads its header.
pub(super) type Decoder<T> =
    Arc<dyn Fn(Resources<'_>) -> Result<(Option<ListHeader>, Vec<T>), PageError> + Send + Sync>;

/// A user as read from a page: normalized, with what the memberships needs.
pub(super) struct PulledUser {
    pub(super) id: IdDigest,
    /// The SCIM id, to name a duplicate.
    pub(super) scim_id: Box<str>,
    pub(super) user: Result<DirectoryUser, UnusableEntry>,
    /// Memberships the user lists itself (`User.groups`).
    pub(super) listed_groups: Vec<ScimRef>,
}

/// Users pages, normalized by the page's worker. Mapped attributes can sit anywhere
/// (extension schemas), so with any mapped the whole resource is parsed first.
pub(super) fn user_decoder(
    keys: IdKeys,
    subject_attribute: SubjectAttribute,
    attributes: AttributeMap,
) -> Decoder<PulledUser> {
    let pulled = move |mut user: ScimUser<'_>, mapped: Mapped| {
        let id = keys.digest(&user.id);
        let scim_id = user.id.as_ref().into();
        let listed_groups = std::mem::take(&mut user.groups);
        let user = normalize_user(user, subject_attribute).map(|mut normalized| {
            normalized.slack_id = mapped.slack_id;
            normalized.picture = mapped.picture;
            normalized
        });
        PulledUser {
            id,
            scim_id,
            user,
            listed_groups,
        }
    };
    if attributes.is_empty() {
        return Arc::new(move |resources| {
            resources.decode("User", PhantomData::<ScimUser>, |user| {
                Ok(pulled(user, Mapped::default()))
            })
        });
    }
    Arc::new(move |resources| {
        resources.decode("User", PhantomData::<Value>, |value| {
            let read =
                |path: &Option<AttributePath>| path.as_ref().and_then(|p| attribute(&value, p));
            let mapped = Mapped {
                slack_id: read(&attributes.slack_id),
                picture: read(&attributes.picture),
            };
            let user =
                ScimUser::deserialize(&value).map_err(|err| format!("not a SCIM User: {err}"))?;
            Ok(pulled(user, mapped))
        })
    })
}

/// A group as read from a page.
pub(super) struct PulledGroup {
    pub(super) id: String,
    /// The trimmed `displayName`, when it has one.
    pub(super) name: Option<String>,
    pub(super) members: Vec<IdDigest>,
}

/// Groups pages, decoded by the page's worker.
pub(super) fn group_decoder(keys: IdKeys) -> Decoder<PulledGroup> {
    Arc::new(move |resources| {
        resources.decode("Group", GroupSeed(&keys), |group| {
            Ok(PulledGroup {
                id: group.id.into_owned(),
                name: group
                    .display_name
                    .as_deref()
                    .and_then(crate::source::normalize::group_name_text)
                    .map(str::to_owned),
                members: group.members,
            })
        })
    })
}

/// Names what broke the memberships, for the page's error.
pub(super) fn membership_error(err: MembershipIndexError, id: &str) -> String {
    match err {
        MembershipIndexError::UserTwice => format!("user id {id:?} appears twice"),
        MembershipIndexError::GroupTwice => format!("group id {id:?} appears twice"),
        MembershipIndexError::TooLarge => {
            "the directory lists more entries than idsync can hold".into()
        }
    }
}

/// Values of `source.attributes`, read from the raw resource.
#[derive(Debug, Default)]
pub(super) struct Mapped {
    pub(super) slack_id: Option<String>,
    pub(super) picture: Option<String>,
}

/// A SCIM user's fields idsync reads; text borrows from the page where it can.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScimUser<'a> {
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) external_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) user_name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) display_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) name: Option<ScimName<'a>>,
    #[serde(default, borrow)]
    pub(super) emails: Vec<ScimEmail<'a>>,
    pub(super) active: Option<bool>,
    #[serde(default)]
    pub(super) groups: Vec<ScimRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScimName<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) formatted: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) given_name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) family_name: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ScimEmail<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) value: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow, deserialize_with = "borrowed_text")]
    pub(super) kind: Option<Cow<'a, str>>,
    pub(super) primary: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ScimRef {
    pub(super) value: Option<String>,
    pub(super) display: Option<String>,
}

/// A group's fields idsync reads, its members' ids already digested.
pub(super) struct ScimGroup<'a> {
    pub(super) id: Cow<'a, str>,
    pub(super) display_name: Option<Cow<'a, str>>,
    pub(super) members: Vec<IdDigest>,
}

/// Reads a group in one pass, digesting each member's id as it is parsed: member
/// lists hold most of a directory's bytes, so they are neither parsed twice (once
/// to find their end, once to read them) nor copied.
#[derive(Clone, Copy)]
pub(super) struct GroupSeed<'k>(&'k IdKeys);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
pub(super) enum GroupField {
    Id,
    DisplayName,
    Members,
    #[serde(other)]
    Other,
}

/// A text field, borrowed from the page unless escapes force a copy.
#[derive(Deserialize)]
pub(super) struct Text<'a>(
    #[serde(borrow, deserialize_with = "borrowed_text")] Option<Cow<'a, str>>,
);

impl<'de> DeserializeSeed<'de> for GroupSeed<'_> {
    type Value = ScimGroup<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, group: D) -> Result<Self::Value, D::Error> {
        group.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GroupSeed<'_> {
    type Value = ScimGroup<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a SCIM Group object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Self::Value, A::Error> {
        // Each field's value, once the field is met: a text field can be `null`.
        let (mut id, mut display_name, mut members) = (None, None, None);
        while let Some(field) = fields.next_key()? {
            match field {
                GroupField::Id => set_once(&mut id, "id", fields.next_value::<Text>()?.0)?,
                GroupField::DisplayName => {
                    let name = fields.next_value::<Text>()?.0;
                    set_once(&mut display_name, "displayName", name)?;
                }
                GroupField::Members => {
                    let digests = fields.next_value_seed(MemberDigests(self.0));
                    let digests = digests.map_err(|err| match &id {
                        Some(Some(id)) => {
                            A::Error::custom(format!("group {id:?} has unreadable members: {err}"))
                        }
                        _ => err,
                    })?;
                    set_once(&mut members, "members", digests)?;
                }
                GroupField::Other => {
                    fields.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ScimGroup {
            id: id.flatten().ok_or_else(|| A::Error::missing_field("id"))?,
            display_name: display_name.flatten(),
            members: members.unwrap_or_default(),
        })
    }
}

/// Keeps a field's value, refusing a field given twice.
pub(super) fn set_once<T, E: serde::de::Error>(
    slot: &mut Option<T>,
    field: &'static str,
    value: T,
) -> Result<(), E> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(E::duplicate_field(field)),
    }
}

/// The digests of a group's member ids (`null` for none), read one member at a
/// time.
#[derive(Clone, Copy)]
pub(super) struct MemberDigests<'k>(&'k IdKeys);

impl<'de> DeserializeSeed<'de> for MemberDigests<'_> {
    type Value = Vec<IdDigest>;

    fn deserialize<D: serde::Deserializer<'de>>(self, members: D) -> Result<Self::Value, D::Error> {
        members.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MemberDigests<'_> {
    type Value = Vec<IdDigest>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of members")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, members: D) -> Result<Self::Value, D::Error> {
        members.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut members: A) -> Result<Self::Value, A::Error> {
        let mut digests = Vec::with_capacity(members.size_hint().unwrap_or(0));
        while let Some(member) = members.next_element::<MemberRef<'de>>()? {
            digests.extend(member.value.map(|id| self.0.digest(&id)));
        }
        Ok(digests)
    }
}

/// A group member's `value` (the member's id) and nothing else.
#[derive(Debug, Deserialize)]
pub(super) struct MemberRef<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub(super) value: Option<Cow<'a, str>>,
}

/// Reads an optional text field without copying it unless JSON escapes force a
/// copy. serde's `borrow` attribute borrows only a bare `Cow<str>` field; an
/// `Option` of one always copies.
pub(super) fn borrowed_text<'de, D: serde::Deserializer<'de>>(
    text: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'de>>::deserialize(text)?.map(|text| text.0))
}

/// Turns a SCIM user into idsync's view of it; the groups are filled in later.
pub(super) fn normalize_user(
    user: ScimUser<'_>,
    subject_attribute: SubjectAttribute,
) -> Result<DirectoryUser, UnusableEntry> {
    let subject = match subject_attribute {
        SubjectAttribute::Id => Some(user.id.as_ref()),
        SubjectAttribute::ExternalId => user.external_id.as_deref(),
    };
    let Some(subject) = subject.filter(|s| !s.trim().is_empty()) else {
        return Err(UnusableEntry {
            label: user
                .user_name
                .as_deref()
                .map_or_else(|| format!("id {}", user.id), str::to_owned),
            reason: match subject_attribute {
                SubjectAttribute::Id => "has no id".into(),
                SubjectAttribute::ExternalId => {
                    "has no externalId, which is the configured subject_attribute".into()
                }
            },
        });
    };
    Ok(DirectoryUser {
        subject: Subject::new(subject),
        active: user.active.unwrap_or(true),
        email: pick_email(&user),
        name: pick_name(&user),
        groups: Vec::new(),
        slack_id: None,
        picture: None,
    })
}

/// The value at a configured attribute path. Multi-valued attributes give their
/// primary (else first) entry, and complex values their `value` sub-attribute.
/// SCIM attribute names are case-insensitive.
pub(super) fn attribute(user: &Value, path: &AttributePath) -> Option<String> {
    let get = |value: &Value, name: &str| -> Option<Value> {
        let object = value.as_object()?;
        object
            .get(name)
            .or_else(|| {
                object
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .cloned()
    };
    let single = |value: Value| -> Value {
        match value {
            Value::Array(items) => {
                let primary = items
                    .iter()
                    .position(|item| item.get("primary") == Some(&Value::Bool(true)));
                items
                    .into_iter()
                    .nth(primary.unwrap_or(0))
                    .unwrap_or(Value::Null)
            }
            other => other,
        }
    };
    let mut current = match &path.schema {
        Some(schema) => get(user, schema)?,
        None => user.clone(),
    };
    for segment in &path.segments {
        current = single(get(&current, segment)?);
    }
    if current.is_object() {
        current = single(get(&current, "value")?);
    }
    match current {
        Value::String(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The primary e-mail, else the first `work` one, else the first, else `userName`
/// when it is an address.
pub(super) fn pick_email(user: &ScimUser<'_>) -> Result<Email, EmailError> {
    let listed = user.emails.iter().filter_map(|email| {
        Some(ListedEmail {
            value: email.value.as_deref()?,
            primary: email.primary == Some(true),
            work: email
                .kind
                .as_deref()
                .is_some_and(|kind| kind.eq_ignore_ascii_case("work")),
        })
    });
    normalize::choose_email(listed, user.user_name.as_deref())
}

/// `displayName`, else `name.formatted`, else given and family name.
pub(super) fn pick_name(user: &ScimUser<'_>) -> Option<String> {
    let name = user.name.as_ref();
    normalize::choose_name(
        user.display_name.as_deref(),
        name.and_then(|n| n.formatted.as_deref()),
        name.and_then(|n| n.given_name.as_deref()),
        name.and_then(|n| n.family_name.as_deref()),
    )
}
