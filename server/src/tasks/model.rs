//! Tasks as stored and sent, the request bodies, the list query, and their
//! validation (API.md: title 1..200 chars after trim, description <= 2000,
//! dueDate RFC 3339; limit 1..100, default 50; offset >= 0).

pub use crate::db::tasks::{NewTask, Page, Task, TaskPage, TaskPatch};
use crate::http::error::{ApiError, FieldError};
use crate::http::{check_text, present};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// `POST /tasks` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTaskBody {
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    due_date: Option<String>,
}

/// `PATCH /tasks/{id}` body: absent = unchanged, `null` = cleared.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskPatchBody {
    #[serde(default, deserialize_with = "present")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    is_completed: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    due_date: Option<Option<String>>,
}

fn check_title(raw: &str, errs: &mut Vec<FieldError>) -> String {
    check_text("title", raw, errs);
    let t = raw.trim();
    let n = t.chars().count();
    if n == 0 || n > 200 {
        errs.push(FieldError::new("title", "must be 1 to 200 characters after trimming"));
    }
    t.to_owned()
}

fn check_description(d: &Option<String>, errs: &mut Vec<FieldError>) {
    if let Some(d) = d {
        check_text("description", d, errs);
    }
    if d.as_ref().is_some_and(|d| d.chars().count() > 2000) {
        errs.push(FieldError::new("description", "must be at most 2000 characters"));
    }
}

/// 0001-01-01 with a positive UTC offset, or 9999-12-31 with a negative
/// one. `raw` parsed as RFC 3339, so it starts with its full date: a prefix
/// test is exact and costs nothing on the common path (the instruction gate
/// counts `decode_new_task`).
fn at_the_edge_of_time(raw: &str, offset_secs: i32) -> bool {
    raw.starts_with("0001-01-01") && offset_secs > 0 || raw.starts_with("9999-12-31") && offset_secs < 0
}

fn check_due(raw: Option<&str>, errs: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let raw = raw?;
    match DateTime::parse_from_rfc3339(raw) {
        // RFC 3339 has four-digit years: an instant that leaves 0001-9999
        // once converted to UTC could not be sent back as RFC 3339. The
        // rule is on the date as written, so that the OpenAPI document can
        // state it exactly (a pattern; see `http::openapi`): the first day
        // with a positive offset and the last day with a negative one are
        // refused, whatever the time.
        Ok(t) if !at_the_edge_of_time(raw, t.offset().local_minus_utc()) => Some(t.with_timezone(&Utc)),
        Ok(_) => {
            errs.push(FieldError::new(
                "dueDate",
                "must fall within the years 0001 to 9999 in UTC: 0001-01-01 needs an offset <= 0, 9999-12-31 one >= 0",
            ));
            None
        }
        Err(_) => {
            errs.push(FieldError::new("dueDate", "must be an RFC 3339 date-time, e.g. 2030-01-31T12:00:00Z"));
            None
        }
    }
}

impl NewTaskBody {
    /// Validates every field, reporting all errors.
    pub fn validate(self) -> Result<NewTask, ApiError> {
        let mut errs = Vec::new();
        let title = check_title(&self.title, &mut errs);
        check_description(&self.description, &mut errs);
        let due_date = check_due(self.due_date.as_deref(), &mut errs);
        if errs.is_empty() {
            Ok(NewTask { title, description: self.description, due_date })
        } else {
            Err(ApiError::Validation(errs))
        }
    }
}

impl TaskPatchBody {
    /// Validates; an empty patch is a 400.
    pub fn validate(self) -> Result<TaskPatch, ApiError> {
        if self.title.is_none() && self.description.is_none() && self.is_completed.is_none() && self.due_date.is_none()
        {
            return Err(ApiError::BadRequest("the patch is empty: send at least one field".into()));
        }
        let mut errs = Vec::new();
        let title = match self.title {
            None => None,
            Some(None) => {
                errs.push(FieldError::new("title", "may not be null"));
                None
            }
            Some(Some(t)) => Some(check_title(&t, &mut errs)),
        };
        if let Some(d) = &self.description {
            check_description(d, &mut errs);
        }
        let is_completed = match self.is_completed {
            None => None,
            Some(None) => {
                errs.push(FieldError::new("isCompleted", "may not be null"));
                None
            }
            Some(Some(b)) => Some(b),
        };
        let due_date = match self.due_date {
            None => None,
            Some(None) => Some(None),
            Some(Some(raw)) => Some(check_due(Some(&raw), &mut errs)),
        };
        if errs.is_empty() {
            Ok(TaskPatch { title, description: self.description, is_completed, due_date })
        } else {
            Err(ApiError::Validation(errs))
        }
    }
}

/// `?limit=&offset=&completed=`.
pub type ListQuery = Page;

impl Page {
    /// Parses a query string; unknown or repeated parameters are a 400 (as
    /// unknown body fields are).
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = ListQuery { limit: 50, offset: 0, completed: None };
        let mut errs = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if seen.iter().any(|s| *s == k) {
                errs.push(FieldError::new(k.as_ref(), "given more than once"));
                continue;
            }
            seen.push(k.to_string());
            match k.as_ref() {
                "limit" => match v.parse::<i64>() {
                    Ok(n) if (1..=100).contains(&n) => q.limit = n,
                    _ => errs.push(FieldError::new("limit", "must be a whole number from 1 to 100")),
                },
                "offset" => match v.parse::<i64>() {
                    Ok(n) if n >= 0 => q.offset = n,
                    _ => errs.push(FieldError::new("offset", "must be a whole number >= 0")),
                },
                "completed" => match v.as_ref() {
                    "true" => q.completed = Some(true),
                    "false" => q.completed = Some(false),
                    _ => errs.push(FieldError::new("completed", "must be true or false")),
                },
                other => errs.push(FieldError::new(other, "unknown query parameter")),
            }
        }
        if errs.is_empty() { Ok(q) } else { Err(ApiError::Validation(errs)) }
    }

    /// The cache field of this page: one entry per query shape.
    pub fn shape(&self) -> String {
        let c = match self.completed {
            None => "-",
            Some(true) => "t",
            Some(false) => "f",
        };
        // Built on every GET /tasks: pushed, not formatted (see kv::Keys).
        let (mut l, mut o) = (itoa::Buffer::new(), itoa::Buffer::new());
        let mut s = String::with_capacity(32);
        for part in ["l", l.format(self.limit), ":o", o.format(self.offset), ":c", c] {
            s.push_str(part);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_defaults_and_bounds() {
        assert_eq!(ListQuery::parse(None).expect("ok"), ListQuery { limit: 50, offset: 0, completed: None });
        let q = ListQuery::parse(Some("limit=100&offset=7&completed=true")).expect("ok");
        assert_eq!((q.limit, q.offset, q.completed), (100, 7, Some(true)));
        for bad in ["limit=0", "limit=101", "limit=x", "offset=-1", "completed=yes", "limit=1&limit=2", "sort=id"] {
            assert!(ListQuery::parse(Some(bad)).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn shapes_differ_per_query() {
        let a = ListQuery::parse(Some("limit=10")).expect("ok").shape();
        let b = ListQuery::parse(Some("limit=10&completed=false")).expect("ok").shape();
        assert_ne!(a, b);
        assert_eq!((a.as_str(), b.as_str()), ("l10:o0:c-", "l10:o0:cf"));
        let c = ListQuery::parse(Some("offset=9223372036854775807&completed=true")).expect("ok").shape();
        assert_eq!(c, "l50:o9223372036854775807:ct");
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        let ok: NewTaskBody = serde_json::from_str(r#"{"title":"  hi  "}"#).expect("json");
        assert_eq!(ok.validate().expect("valid").title, "hi");
        let blank: NewTaskBody = serde_json::from_str(r#"{"title":"   "}"#).expect("json");
        assert!(blank.validate().is_err());
        let long: NewTaskBody = serde_json::from_str(&format!(r#"{{"title":"{}"}}"#, "é".repeat(201))).expect("json");
        assert!(long.validate().is_err());
        let max: NewTaskBody = serde_json::from_str(&format!(r#"{{"title":"{}"}}"#, "é".repeat(200))).expect("json");
        assert!(max.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<NewTaskBody>(r#"{"title":"a","owner":1}"#).is_err());
        assert!(serde_json::from_str::<TaskPatchBody>(r#"{"done":true}"#).is_err());
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let p: TaskPatchBody = serde_json::from_str(r#"{"description":null}"#).expect("json");
        assert_eq!(p.validate().expect("valid").description, Some(None));
        let e: TaskPatchBody = serde_json::from_str("{}").expect("json");
        assert!(e.validate().is_err());
        let n: TaskPatchBody = serde_json::from_str(r#"{"title":null}"#).expect("json");
        assert!(n.validate().is_err());
    }

    #[test]
    fn due_dates_are_rfc3339_and_normalised_to_utc() {
        let b: NewTaskBody =
            serde_json::from_str(r#"{"title":"a","dueDate":"2030-01-01T02:00:00+02:00"}"#).expect("json");
        let t = b.validate().expect("valid");
        assert_eq!(t.due_date.map(|d| d.to_rfc3339()), Some("2030-01-01T00:00:00+00:00".into()));
        let bad: NewTaskBody = serde_json::from_str(r#"{"title":"a","dueDate":"tomorrow"}"#).expect("json");
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_openapi_title_pattern_accepts_exactly_what_this_module_accepts() {
        let pattern = regex::Regex::new(&crate::http::openapi::title_pattern()).expect("the pattern compiles");
        let x = |n: usize| "x".repeat(n);
        let samples = [
            String::new(),
            " ".into(),
            "a".into(),
            " a ".into(),
            "\u{3000}\u{85}a\u{a0}\u{2028}".into(),
            "\u{85}".into(),
            "\u{1c}".into(),
            "\u{feff}".into(),
            "\u{200b}".into(),
            "a\0".into(),
            "\0".into(),
            "a\nb".into(),
            "a\n".into(),
            x(200),
            x(201),
            format!("  {}\t\n", x(200)),
            format!(" {} ", x(199)),
            format!("a{}b", " ".repeat(198)),
            format!("a{}b", " ".repeat(199)),
            format!("\u{1c}{}", x(199)),
            format!("\u{1c}{}", x(200)),
        ];
        for s in samples {
            let server = serde_json::from_value::<NewTaskBody>(serde_json::json!({ "title": s }))
                .expect("a body")
                .validate()
                .is_ok();
            assert_eq!(pattern.is_match(&s), server, "{s:?}");
        }
    }
}
