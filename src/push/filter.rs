//! The part of RFC 7644 §3.4.2.2 filters identity providers use to look resources
//! up: comparisons joined by `and`, `eq`/`ne`/`co`/`sw`/`ew`/`pr`, attribute paths
//! (`userName`, `emails.value`, an extension URN's attribute) and value paths such
//! as `members[value eq "…"]`. Anything else (`or`, `not`, parentheses, `gt`) is
//! refused with the part named, never guessed at.

use serde_json::Value;

use super::error::ScimError;

/// All conditions must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter(pub Vec<Condition>);

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The attribute and, optionally, its sub-attribute (`emails`, `value`).
    pub path: Vec<String>,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Compare(Op, Value),
    Present,
    /// `attr[filter]`: some value of `attr` matches the inner filter.
    Any(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Literal(Value),
    Open,
    Close,
}

/// Parses a whole filter.
pub fn parse(text: &str) -> Result<Filter, ScimError> {
    let tokens = tokenize(text)?;
    let mut at = 0;
    let filter = parse_and(&tokens, &mut at)?;
    match tokens.get(at) {
        None => Ok(filter),
        Some(token) => Err(ScimError::filter(format!(
            "unexpected {} in filter {text:?}",
            describe(token)
        ))),
    }
}

fn parse_and(tokens: &[Token], at: &mut usize) -> Result<Filter, ScimError> {
    let mut conditions = vec![parse_condition(tokens, at)?];
    while let Some(Token::Word(word)) = tokens.get(*at) {
        if !word.eq_ignore_ascii_case("and") {
            break;
        }
        *at += 1;
        conditions.push(parse_condition(tokens, at)?);
    }
    Ok(Filter(conditions))
}

fn parse_condition(tokens: &[Token], at: &mut usize) -> Result<Condition, ScimError> {
    let Some(Token::Word(path)) = tokens.get(*at) else {
        return Err(ScimError::filter(match tokens.get(*at) {
            Some(token) => format!("expected an attribute, found {}", describe(token)),
            None => "expected an attribute, found the end of the filter".into(),
        }));
    };
    if ["or", "not"].iter().any(|w| path.eq_ignore_ascii_case(w)) {
        return Err(ScimError::filter(format!(
            "{path:?} is not supported; only \"and\" joins comparisons"
        )));
    }
    *at += 1;
    let path: Vec<String> = split_path(path)?;
    if tokens.get(*at) == Some(&Token::Open) {
        *at += 1;
        let inner = parse_and(tokens, at)?;
        if tokens.get(*at) != Some(&Token::Close) {
            return Err(ScimError::filter(
                "a value filter [ ... ] is not closed with ]",
            ));
        }
        *at += 1;
        return Ok(Condition {
            path,
            test: Test::Any(Box::new(inner)),
        });
    }
    parse_test(tokens, at, &path).map(|test| Condition { path, test })
}

/// The operator after an attribute path, and its value.
fn parse_test(tokens: &[Token], at: &mut usize, path: &[String]) -> Result<Test, ScimError> {
    let op = match tokens.get(*at) {
        Some(Token::Word(op)) => op.to_ascii_lowercase(),
        _ => {
            return Err(ScimError::filter(format!(
                "expected an operator after {}",
                path.join(".")
            )))
        }
    };
    *at += 1;
    let op = match op.as_str() {
        "pr" => return Ok(Test::Present),
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "co" => Op::Co,
        "sw" => Op::Sw,
        "ew" => Op::Ew,
        other => {
            return Err(ScimError::filter(format!(
                "operator {other:?} is not supported (eq, ne, co, sw, ew, pr are)"
            )))
        }
    };
    match tokens.get(*at) {
        Some(Token::Literal(value)) => {
            *at += 1;
            Ok(Test::Compare(op, value.clone()))
        }
        _ => Err(ScimError::filter(format!(
            "expected a value (\"text\", a number, true, false or null) after {}",
            path.join(".")
        ))),
    }
}

/// `emails.value` → [`emails`, `value`]; an extension URN keeps its colons:
/// `urn:…:User:department` → [`urn:…:User`, `department`].
pub fn split_path(path: &str) -> Result<Vec<String>, ScimError> {
    let (urn, rest) = match path.rfind(':') {
        Some(colon) if path.to_ascii_lowercase().starts_with("urn:") => {
            (Some(&path[..colon]), &path[colon + 1..])
        }
        _ => (None, path),
    };
    let parts: Vec<String> = urn
        .into_iter()
        .chain(rest.split('.'))
        .map(str::to_owned)
        .collect();
    let valid = |p: &String| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '$' | '_' | '-' | ':' | '.'))
    };
    if parts.len() > 3 || !parts.iter().all(valid) {
        return Err(ScimError::filter(format!(
            "{path:?} is not an attribute path"
        )));
    }
    Ok(parts)
}

fn tokenize(text: &str) -> Result<Vec<Token>, ScimError> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while let Some(c) = rest.chars().next() {
        let (token, len) = match c {
            '[' => (Token::Open, 1),
            ']' => (Token::Close, 1),
            '(' | ')' => {
                return Err(ScimError::filter(
                    "parentheses are not supported in filters",
                ))
            }
            '"' => string_literal(rest)?,
            _ => {
                let len = rest
                    .find(|c: char| c.is_whitespace() || matches!(c, '[' | ']' | '(' | ')' | '"'))
                    .unwrap_or(rest.len());
                let word = &rest[..len];
                let token =
                    match word {
                        "true" | "false" | "null" => {
                            Token::Literal(serde_json::from_str(word).unwrap_or(Value::Null))
                        }
                        _ if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                            Token::Literal(serde_json::from_str(word).map_err(|_| {
                                ScimError::filter(format!("{word:?} is not a number"))
                            })?)
                        }
                        _ => Token::Word(word.to_owned()),
                    };
                (token, len)
            }
        };
        tokens.push(token);
        rest = rest[len..].trim_start();
    }
    Ok(tokens)
}

/// A JSON string at the start of `text`, and its length in bytes.
fn string_literal(text: &str) -> Result<(Token, usize), ScimError> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                let value: String = serde_json::from_str(&text[..=i]).map_err(|_| {
                    ScimError::filter(format!("{} is not a valid string", &text[..=i]))
                })?;
                return Ok((Token::Literal(Value::String(value)), i + 1));
            }
            _ => {}
        }
    }
    Err(ScimError::filter(
        "a string in the filter is not closed with \"",
    ))
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(word) => format!("{word:?}"),
        Token::Literal(value) => value.to_string(),
        Token::Open => "[".into(),
        Token::Close => "]".into(),
    }
}

impl Filter {
    /// Whether `resource` matches.
    pub fn matches(&self, resource: &Value) -> bool {
        self.0.iter().all(|c| c.matches(resource))
    }

    /// The value compared by a one-condition `attribute eq "text"` filter, which
    /// an index can answer.
    pub fn single_eq(&self, attribute: &str) -> Option<&str> {
        match self.0.as_slice() {
            [Condition {
                path,
                test: Test::Compare(Op::Eq, Value::String(text)),
            }] if path.len() == 1 && path[0].eq_ignore_ascii_case(attribute) => Some(text),
            _ => None,
        }
    }
}

impl Condition {
    fn matches(&self, resource: &Value) -> bool {
        let values = values_at(resource, &self.path);
        match &self.test {
            Test::Present => values.iter().any(|v| !v.is_null()),
            Test::Any(inner) => values.iter().any(|v| inner.matches(v)),
            Test::Compare(Op::Ne, expected) => !values.iter().any(|v| equal(v, expected)),
            Test::Compare(op, expected) => values.iter().any(|v| compare(*op, v, expected)),
        }
    }
}

/// The values at `path`, looking through multi-valued attributes; names match
/// whatever their case.
pub fn values_at<'v>(resource: &'v Value, path: &[String]) -> Vec<&'v Value> {
    let mut current = vec![resource];
    for name in path {
        current = current
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            })
            .filter_map(|v| field(v, name))
            .collect();
    }
    current
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        })
        .collect()
}

/// The field `name` of an object, whatever its case.
pub fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    let object = value.as_object()?;
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Text compares case-insensitively (most SCIM attributes are `caseExact: false`;
/// idsync's ids are lower-case, so their case never matters).
pub fn equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::String(a), Value::String(b)) => a.to_lowercase() == b.to_lowercase(),
        (a, b) => a == b,
    }
}

fn compare(op: Op, actual: &Value, expected: &Value) -> bool {
    let (Value::String(a), Value::String(b)) = (actual, expected) else {
        return op == Op::Eq && actual == expected;
    };
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Co => a.contains(&b),
        Op::Sw => a.starts_with(&b),
        Op::Ew => a.ends_with(&b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookups_the_providers_send_parse_and_match() {
        let user = json!({"userName": "Ada@Example.com", "externalId": "00u1",
            "emails": [{"value": "ada@example.com", "type": "work"}]});
        for text in [
            "userName eq \"ada@example.com\"",
            "externalId eq \"00u1\" and userName pr",
            "emails[type eq \"work\"]",
            "emails.value co \"example\"",
        ] {
            assert!(parse(text).unwrap().matches(&user), "{text}");
        }
        assert!(!parse("userName eq \"bob\"").unwrap().matches(&user));
        let group = json!({"id": "g1", "members": [{"value": "u1"}]});
        assert!(parse("id eq \"g1\" and members[value eq \"u1\"]")
            .unwrap()
            .matches(&group));
        assert_eq!(
            parse("USERNAME eq \"x\"").unwrap().single_eq("userName"),
            Some("x")
        );
    }

    #[test]
    fn injections_and_unsupported_parts_are_refused_by_name() {
        for (text, needle) in [
            ("userName eq \"a\" or 1 eq 1", "\"or\""),
            ("userName eq \"a\" ) or (", "parentheses"),
            ("userName gt \"a\"", "\"gt\""),
            ("userName eq \"a", "not closed"),
            ("userName eq", "expected a value"),
            ("userName eq \"a\" extra", "\"extra\""),
            ("members[value eq \"a\"", "not closed"),
            ("user;Name eq \"a\"", "attribute path"),
            ("", "end of the filter"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.detail.contains(needle), "{text}: {}", err.detail);
            assert_eq!(err.scim_type, Some("invalidFilter"));
        }
        let quoted = parse(r#"userName eq "a\" or \"1\" eq \"1""#).unwrap();
        assert_eq!(quoted.single_eq("userName"), Some(r#"a" or "1" eq "1"#));
    }
}
