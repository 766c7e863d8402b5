//! A webhook's `filter`: conditions on the payload's fields that decide whether an event is
//! delivered, checked after the channel, status and campaign rules.
//!
//! A filter is compiled once, when its record is decoded (the join keeps decoded records),
//! into a tree of typed tests; evaluating it reads the event in place and allocates nothing.
//! The record keeps the filter as written, so reading a webhook back shows what was sent.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::event::FeedbackEvent;
use crate::schema::Violation;

/// Conditions one filter may hold in all (each `field`/`op` node counts one).
pub const MAX_CONDITIONS: usize = 32;
/// Nesting of `all` / `any` / `not` below the filter's top node.
pub const MAX_DEPTH: usize = 4;

/// The payload fields a condition may test, by their path in the payload, and the short
/// names they are also known by.
const FIELDS: [(&str, Field); 13] = [
    ("requestId", Field::RequestId),
    ("channel", Field::Channel),
    (
        "messageExecution.messageExecutionID",
        Field::MessageExecutionId,
    ),
    ("messageExecution.campaignID", Field::CampaignId),
    (
        "messageExecution.campaignVersionID",
        Field::CampaignVersionId,
    ),
    (
        "messageDeliveryFeedback.feedbackStatus.value",
        Field::FeedbackStatus,
    ),
    ("messageDeliveryFeedback.retryCount", Field::RetryCount),
    (
        "messageDeliveryFeedback.messageFailure.category",
        Field::Failure("category"),
    ),
    (
        "messageDeliveryFeedback.messageFailure.type",
        Field::Failure("type"),
    ),
    (
        "messageDeliveryFeedback.messageFailure.code",
        Field::Failure("code"),
    ),
    (
        "messageDeliveryFeedback.messageFailure.reason",
        Field::Failure("reason"),
    ),
    (
        "messageDeliveryFeedback.messageExclusion.code",
        Field::Exclusion("code"),
    ),
    (
        "messageDeliveryFeedback.messageExclusion.reason",
        Field::Exclusion("reason"),
    ),
];

/// Short names for the fields people filter on most.
const ALIASES: [(&str, Field); 2] = [
    ("feedbackStatus", Field::FeedbackStatus),
    ("retryCount", Field::RetryCount),
];

/// The operators, as written in a condition's `op`.
pub const OPS: [&str; 9] = [
    "equals", "in", "notIn", "exists", "prefix", "gt", "gte", "lt", "lte",
];

/// The field names a condition may use, for documents and forms.
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().chain(ALIASES.iter()).map(|(name, _)| *name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RequestId,
    Channel,
    MessageExecutionId,
    CampaignId,
    CampaignVersionId,
    FeedbackStatus,
    RetryCount,
    /// A member of `messageFailure`.
    Failure(&'static str),
    /// A member of `messageExclusion`.
    Exclusion(&'static str),
}

/// A literal of a condition, kept as text and, when it reads as one, as a number, so that
/// `"25"` and `25` compare alike whichever form the event carries.
#[derive(Debug, Clone, PartialEq)]
struct Literal {
    text: Box<str>,
    number: Option<f64>,
}

impl Literal {
    fn of(value: &Value) -> Option<Literal> {
        match value {
            Value::String(s) => Some(Literal {
                text: s.as_str().into(),
                number: s.trim().parse().ok(),
            }),
            Value::Number(n) => Some(Literal {
                text: n.to_string().into(),
                number: n.as_f64(),
            }),
            _ => None,
        }
    }

    fn matches(&self, found: Found<'_>) -> bool {
        match found {
            Found::Text(s) => *s == *self.text,
            Found::Number(n) => self.number == Some(n),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Compare {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Equals(Literal),
    In(Box<[Literal]>),
    NotIn(Box<[Literal]>),
    Exists,
    Prefix(Box<str>),
    Compare(Compare, f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Box<[Node]>),
    Any(Box<[Node]>),
    Not(Box<Node>),
    Condition(Field, Test),
}

/// A compiled filter, with the JSON it was compiled from.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    source: Value,
    root: Node,
}

/// A field's value in one event.
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    Text(&'a str),
    Number(f64),
}

impl<'a> Found<'a> {
    fn of(value: &'a Value) -> Option<Found<'a>> {
        match value {
            Value::String(s) => Some(Found::Text(s)),
            Value::Number(n) => n.as_f64().map(Found::Number),
            _ => None,
        }
    }

    fn number(self) -> Option<f64> {
        match self {
            Found::Number(n) => Some(n),
            Found::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// What a filter sees of an event: the event, and the channel and status matching found.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub event: &'a FeedbackEvent,
    pub channel: &'a str,
    pub status: &'a str,
}

impl<'a> Subject<'a> {
    fn get(&self, field: Field) -> Option<Found<'a>> {
        let execution = self.event.execution();
        let feedback = self.event.feedback();
        let text = |s: Option<&'a String>| s.map(|s| Found::Text(s.as_str()));
        match field {
            Field::RequestId => Some(Found::Text(&self.event.request_id)),
            Field::Channel => Some(Found::Text(self.channel)),
            Field::MessageExecutionId => Some(Found::Text(&execution.message_execution_id)),
            Field::CampaignId => text(execution.campaign_id.as_ref()),
            Field::CampaignVersionId => text(execution.campaign_version_id.as_ref()),
            Field::FeedbackStatus => Some(Found::Text(self.status)),
            // The payload says 0 when the event has no retry count.
            Field::RetryCount => Some(Found::Number(
                feedback.and_then(|f| f.retry_count).unwrap_or(0) as f64,
            )),
            Field::Failure(member) => {
                feedback.and_then(|f| f.message_failure.get(member).and_then(Found::of))
            }
            Field::Exclusion(member) => {
                feedback.and_then(|f| f.message_exclusion.get(member).and_then(Found::of))
            }
        }
    }
}

impl Filter {
    /// Whether `subject` passes the filter.
    pub fn admits(&self, subject: &Subject<'_>) -> bool {
        eval(&self.root, subject)
    }

    /// The filter as written.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Compiles `source` (found at JSON pointer `at` of its record), or says everything
    /// that is wrong with it, each with its pointer.
    pub fn compile(source: &Value, at: &str) -> Result<Filter, Vec<Violation>> {
        let mut compiler = Compiler::default();
        let root = compiler.node(source, at, 0);
        if compiler.conditions > MAX_CONDITIONS {
            compiler.refuse(
                at,
                format!(
                    "has {} conditions, more than the {MAX_CONDITIONS} a filter may hold",
                    compiler.conditions
                ),
            );
        }
        match root {
            Some(root) if compiler.refusals.is_empty() => Ok(Filter {
                source: source.clone(),
                root,
            }),
            _ => Err(compiler.refusals),
        }
    }
}

fn eval(node: &Node, subject: &Subject<'_>) -> bool {
    match node {
        Node::All(nodes) => nodes.iter().all(|n| eval(n, subject)),
        Node::Any(nodes) => nodes.iter().any(|n| eval(n, subject)),
        Node::Not(node) => !eval(node, subject),
        Node::Condition(field, test) => {
            let found = subject.get(*field);
            match test {
                Test::Exists => found.is_some(),
                // A missing field is in no list.
                Test::NotIn(list) => !found.is_some_and(|f| list.iter().any(|l| l.matches(f))),
                Test::Equals(literal) => found.is_some_and(|f| literal.matches(f)),
                Test::In(list) => found.is_some_and(|f| list.iter().any(|l| l.matches(f))),
                Test::Prefix(prefix) => {
                    matches!(found, Some(Found::Text(s)) if s.starts_with(&**prefix))
                }
                Test::Compare(op, bound) => {
                    found.and_then(Found::number).is_some_and(|n| match op {
                        Compare::Gt => n > *bound,
                        Compare::Gte => n >= *bound,
                        Compare::Lt => n < *bound,
                        Compare::Lte => n <= *bound,
                    })
                }
            }
        }
    }
}

#[derive(Default)]
struct Compiler {
    conditions: usize,
    refusals: Vec<Violation>,
}

impl Compiler {
    fn refuse(&mut self, field: &str, message: impl Into<String>) {
        self.refusals.push(Violation {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn node(&mut self, value: &Value, at: &str, depth: usize) -> Option<Node> {
        let Some(object) = value.as_object() else {
            self.refuse(at, "must be an object: {\"all\": […]}, {\"any\": […]}, {\"not\": {…}} or a condition {\"field\", \"op\", \"value\"}");
            return None;
        };
        let groups = ["all", "any", "not"];
        let named: Vec<&str> = groups
            .into_iter()
            .filter(|g| object.contains_key(*g))
            .collect();
        let is_condition = object.contains_key("field") || object.contains_key("op");
        match (named.as_slice(), is_condition) {
            ([group], false) => {
                if object.len() != 1 {
                    self.refuse(at, format!("\"{group}\" stands alone in its object"));
                    return None;
                }
                if depth >= MAX_DEPTH {
                    self.refuse(
                        at,
                        format!("nests deeper than the {MAX_DEPTH} levels a filter may have"),
                    );
                    return None;
                }
                self.group(group, &object[*group], &format!("{at}/{group}"), depth + 1)
            }
            ([], true) => self.condition(object, at),
            _ => {
                self.refuse(
                    at,
                    "must be exactly one of: all, any, not, or a condition (field, op, value)",
                );
                None
            }
        }
    }

    fn group(&mut self, group: &str, value: &Value, at: &str, depth: usize) -> Option<Node> {
        if group == "not" {
            return self.node(value, at, depth).map(|n| Node::Not(Box::new(n)));
        }
        let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
            self.refuse(at, "must be a non-empty list of conditions");
            return None;
        };
        let nodes: Vec<Option<Node>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.node(item, &format!("{at}/{i}"), depth))
            .collect();
        let nodes: Option<Vec<Node>> = nodes.into_iter().collect();
        let nodes = nodes?.into_boxed_slice();
        Some(if group == "all" {
            Node::All(nodes)
        } else {
            Node::Any(nodes)
        })
    }

    fn condition(&mut self, object: &serde_json::Map<String, Value>, at: &str) -> Option<Node> {
        self.conditions += 1;
        let before = self.refusals.len();
        for key in object.keys() {
            if !["field", "op", "value", "values"].contains(&key.as_str()) {
                self.refuse(
                    &format!("{at}/{key}"),
                    "is not a member of a condition (field, op, value, values)",
                );
            }
        }
        let name = object.get("field").and_then(Value::as_str);
        let field = FIELDS
            .iter()
            .chain(ALIASES.iter())
            .find(|(n, _)| Some(*n) == name)
            .map(|(_, f)| *f);
        if field.is_none() {
            let known: Vec<&str> = field_names().collect();
            self.refuse(
                &format!("{at}/field"),
                format!("must be one of: {}", known.join(", ")),
            );
        }
        let op = object.get("op").and_then(Value::as_str);
        let test = match op {
            Some(op @ ("equals" | "prefix" | "gt" | "gte" | "lt" | "lte")) => {
                self.single(op, object, at)
            }
            Some(op @ ("in" | "notIn")) => self.list(op, object, at),
            Some("exists") => {
                for key in ["value", "values"] {
                    if object.contains_key(key) {
                        self.refuse(&format!("{at}/{key}"), "\"exists\" takes no value");
                    }
                }
                Some(Test::Exists)
            }
            _ => {
                self.refuse(
                    &format!("{at}/op"),
                    format!("must be one of: {}", OPS.join(", ")),
                );
                None
            }
        };
        match (field, test) {
            (Some(field), Some(test)) if self.refusals.len() == before => {
                Some(Node::Condition(field, test))
            }
            _ => None,
        }
    }

    fn single(
        &mut self,
        op: &str,
        object: &serde_json::Map<String, Value>,
        at: &str,
    ) -> Option<Test> {
        if object.contains_key("values") {
            self.refuse(
                &format!("{at}/values"),
                format!("\"{op}\" takes one \"value\"; a list is for \"in\" and \"notIn\""),
            );
        }
        let pointer = format!("{at}/value");
        let Some(literal) = object.get("value").and_then(Literal::of) else {
            self.refuse(
                &pointer,
                format!("\"{op}\" needs a \"value\": a string or a number"),
            );
            return None;
        };
        let compare = |c| {
            literal
                .number
                .filter(|n| n.is_finite())
                .map(|n| Test::Compare(c, n))
        };
        let test = match op {
            "equals" => Some(Test::Equals(literal.clone())),
            "prefix" => match object.get("value") {
                Some(Value::String(s)) if !s.is_empty() => Some(Test::Prefix(s.as_str().into())),
                _ => None,
            },
            "gt" => compare(Compare::Gt),
            "gte" => compare(Compare::Gte),
            "lt" => compare(Compare::Lt),
            _ => compare(Compare::Lte),
        };
        if test.is_none() {
            let want = if op == "prefix" {
                "a non-empty string"
            } else {
                "a number"
            };
            self.refuse(&pointer, format!("\"{op}\" needs {want}"));
        }
        test
    }

    fn list(
        &mut self,
        op: &str,
        object: &serde_json::Map<String, Value>,
        at: &str,
    ) -> Option<Test> {
        if object.contains_key("value") {
            self.refuse(
                &format!("{at}/value"),
                format!("\"{op}\" takes a list: \"values\""),
            );
        }
        let pointer = format!("{at}/values");
        let Some(items) = object
            .get("values")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        else {
            self.refuse(
                &pointer,
                format!("\"{op}\" needs \"values\": a non-empty list of strings or numbers"),
            );
            return None;
        };
        let mut literals = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match Literal::of(item) {
                Some(literal) => literals.push(literal),
                None => self.refuse(&format!("{pointer}/{i}"), "must be a string or a number"),
            }
        }
        let literals = literals.into_boxed_slice();
        Some(if op == "in" {
            Test::In(literals)
        } else {
            Test::NotIn(literals)
        })
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = Value::deserialize(deserializer)?;
        Filter::compile(&source, "/filter").map_err(|refusals| {
            let each: Vec<String> = refusals.iter().map(ToString::to_string).collect();
            serde::de::Error::custom(each.join("; "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::{parse_value, spec_event};
    use serde_json::json;

    fn compile(v: Value) -> Filter {
        Filter::compile(&v, "/filter").unwrap()
    }

    fn refusals(v: Value) -> Vec<String> {
        Filter::compile(&v, "/filter")
            .unwrap_err()
            .into_iter()
            .map(|r| r.field)
            .collect()
    }

    /// The SPEC's example event with `failure` as its `messageFailure` and `retries`.
    fn event(failure: Value, retries: u64) -> FeedbackEvent {
        let mut e = spec_event();
        let feedback =
            &mut e["_experience"]["customerJourneyManagement"]["messageDeliveryfeedback"];
        feedback["messageFailure"] = failure;
        feedback["retryCount"] = json!(retries);
        parse_value(&e).unwrap()
    }

    fn admits(filter: &Filter, event: &FeedbackEvent) -> bool {
        filter.admits(&Subject {
            event,
            channel: "email",
            status: "bounce",
        })
    }

    const CAMPAIGN: &str = "16f24a15-7e21-477c-848a-d5695ca7f137";

    #[test]
    fn only_hard_bounces_of_one_campaign() {
        let filter = compile(json!({"all": [
            {"field": "messageDeliveryFeedback.messageFailure.type", "op": "equals", "value": "Hard"},
            {"field": "messageExecution.campaignID", "op": "in", "values": [CAMPAIGN, "other"]},
        ]}));
        let hard = event(
            json!({"category": "async", "type": "Hard", "code": "550"}),
            0,
        );
        let soft = event(
            json!({"category": "async", "type": "Soft", "code": "421"}),
            0,
        );
        let none = event(Value::Null, 0);
        assert!(admits(&filter, &hard));
        assert!(!admits(&filter, &soft));
        assert!(!admits(&filter, &none));
        let mut other = spec_event();
        other["_experience"]["customerJourneyManagement"]["messageExecution"]["campaignID"] =
            json!("another-campaign");
        other["_experience"]["customerJourneyManagement"]["messageDeliveryfeedback"]
            ["messageFailure"]["type"] = json!("Hard");
        assert!(!admits(&filter, &parse_value(&other).unwrap()));
    }

    #[test]
    fn not_retries_and_numeric_compares() {
        let first_tries = compile(json!({"not": {"field": "retryCount", "op": "gt", "value": 0}}));
        assert!(admits(&first_tries, &event(Value::Null, 0)));
        assert!(!admits(&first_tries, &event(Value::Null, 2)));
        // A code written as text compares as a number; a literal as text equals a number.
        let server_codes = compile(json!({"all": [
            {"field": "messageDeliveryFeedback.messageFailure.code", "op": "gte", "value": 500},
            {"field": "retryCount", "op": "equals", "value": "0"}
        ]}));
        assert!(admits(&server_codes, &event(json!({"code": "550"}), 0)));
        assert!(admits(&server_codes, &event(json!({"code": 501}), 0)));
        assert!(!admits(&server_codes, &event(json!({"code": "421"}), 0)));
        assert!(!admits(&server_codes, &event(json!({"code": "n/a"}), 0)));
        assert!(!admits(&server_codes, &event(json!({"code": "550"}), 1)));
    }

    #[test]
    fn any_exists_prefix_and_not_in() {
        let filter = compile(json!({"any": [
            {"field": "messageDeliveryFeedback.messageFailure.category", "op": "exists"},
            {"field": "requestId", "op": "prefix", "value": "8NoB"}
        ]}));
        assert!(admits(&filter, &event(json!({"category": "sync"}), 0)));
        // The SPEC event's requestId starts with 8NoB.
        assert!(admits(&filter, &event(Value::Null, 0)));
        let filter = compile(
            json!({"field": "feedbackStatus", "op": "notIn", "values": ["bounce", "error"]}),
        );
        assert!(!admits(&filter, &event(Value::Null, 0)));
        // A missing field is in no list.
        let filter = compile(
            json!({"field": "messageDeliveryFeedback.messageExclusion.code", "op": "notIn", "values": ["1"]}),
        );
        assert!(admits(&filter, &event(Value::Null, 0)));
        let filter = compile(
            json!({"field": "messageDeliveryFeedback.messageExclusion.code", "op": "in", "values": ["1"]}),
        );
        assert!(!admits(&filter, &event(Value::Null, 0)));
    }

    #[test]
    fn every_refusal_names_its_pointer() {
        assert_eq!(
            refusals(json!({"all": [
                {"field": "nope", "op": "equals", "value": 1},
                {"field": "channel", "op": "like", "value": "e"},
                {"field": "channel", "op": "in", "value": "email"},
                {"field": "retryCount", "op": "gt", "value": "many"},
                {"field": "channel", "op": "exists", "value": true},
                {"any": []},
                {"all": [], "not": {}},
                {"field": "channel", "op": "equals", "value": "sms", "extra": 1},
                [1]
            ]})),
            [
                "/filter/all/0/field",
                "/filter/all/1/op",
                "/filter/all/2/value",
                "/filter/all/2/values",
                "/filter/all/3/value",
                "/filter/all/4/value",
                "/filter/all/5/any",
                "/filter/all/6",
                "/filter/all/7/extra",
                "/filter/all/8",
            ]
        );
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let condition = json!({"field": "channel", "op": "equals", "value": "email"});
        let many = json!({"any": vec![condition.clone(); MAX_CONDITIONS + 1]});
        assert_eq!(refusals(many), ["/filter"]);
        assert!(Filter::compile(
            &json!({"any": vec![condition.clone(); MAX_CONDITIONS]}),
            "/filter"
        )
        .is_ok());
        let mut deep = condition;
        for _ in 0..=MAX_DEPTH {
            deep = json!({ "not": deep });
        }
        assert_eq!(refusals(deep).len(), 1);
    }

    #[test]
    fn the_schema_names_the_same_fields_and_operators() {
        let schema: Value = serde_json::from_str(crate::schema::WEBHOOK).unwrap();
        let node = &schema["$defs"]["filterNode"]["properties"];
        let names = |v: &Value| -> Vec<String> {
            v["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(&node["field"]), field_names().collect::<Vec<_>>());
        assert_eq!(names(&node["op"]), OPS);
    }

    #[test]
    fn it_reads_back_as_written() {
        let written = json!({"field": "channel", "op": "equals", "value": "sms"});
        let filter: Filter = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(serde_json::to_value(&filter).unwrap(), written);
        let refused = serde_json::from_value::<Filter>(json!({"field": "x"})).unwrap_err();
        assert!(refused.to_string().contains("/filter/field"), "{refused}");
    }
}
