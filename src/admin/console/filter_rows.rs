//! The filter builder: a webhook's `filter` as rows of the form (each a field, an
//! operator and a value, optionally negated, all joined by "all" or "any"), and back.
//!
//! Pure: no I/O. A filter the rows cannot show (groups inside groups) is kept as written
//! and shown as such; the API remains the way to edit it.

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::filter::{field_names, OPS};
use crate::schema::Violation;

/// Rows the builder shows at most (the record takes 32 conditions).
pub const MAX_ROWS: usize = 32;

/// One condition of the builder.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct FilterRow {
    /// The condition is negated ("is not").
    pub negate: bool,
    pub field: String,
    pub op: String,
    /// One value; for `in` and `notIn`, values separated by commas.
    pub value: String,
}

impl FilterRow {
    fn is_empty(&self) -> bool {
        self.field.is_empty() && self.value.trim().is_empty()
    }
}

/// The builder's choices, for the page: the fields and operators a row may use.
pub fn choices() -> (Vec<&'static str>, Vec<&'static str>) {
    (field_names().collect(), OPS.to_vec())
}

/// A record's filter as `(join, rows)`, or `None` when rows cannot show it.
pub fn rows_of(filter: &Value) -> Option<(String, Vec<FilterRow>)> {
    let (join, items) = match filter {
        Value::Object(o) if o.len() == 1 && (o.contains_key("all") || o.contains_key("any")) => {
            let (join, items) = o.iter().next()?;
            (join.clone(), items.as_array()?.clone())
        }
        Value::Object(_) => ("all".to_owned(), vec![filter.clone()]),
        _ => return None,
    };
    let rows = items.iter().map(row_of).collect::<Option<Vec<_>>>()?;
    Some((join, rows))
}

fn row_of(item: &Value) -> Option<FilterRow> {
    let (negate, condition) = match item.get("not") {
        Some(inner) => (true, inner),
        None => (false, item),
    };
    let field = condition.get("field")?.as_str()?.to_owned();
    let op = condition.get("op")?.as_str()?.to_owned();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let value = match (condition.get("value"), condition.get("values")) {
        (Some(v), None) => text(v),
        (None, Some(Value::Array(list))) => list.iter().map(text).collect::<Vec<_>>().join(", "),
        (None, None) => String::new(),
        _ => return None,
    };
    Some(FilterRow {
        negate,
        field,
        op,
        value,
    })
}

/// The filter the rows describe (`None` when every row is empty), or what the builder
/// itself can tell is wrong, at the pointer the record would have.
pub fn filter_of(join: &str, rows: &[FilterRow]) -> Result<Option<Value>, Vec<Violation>> {
    let join = if join == "any" { "any" } else { "all" };
    let mut refused = Vec::new();
    let mut items = Vec::new();
    for row in rows.iter().filter(|r| !r.is_empty()) {
        let at = format!("/filter/{join}/{}", items.len());
        let value = row.value.trim();
        let mut condition = json!({ "field": row.field, "op": row.op });
        match row.op.as_str() {
            "exists" => {}
            "in" | "notIn" => {
                let values: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                if values.is_empty() {
                    refused.push(Violation {
                        field: format!("{at}/values"),
                        message: "give one or more values, separated by commas".into(),
                    });
                }
                condition["values"] = json!(values);
            }
            "gt" | "gte" | "lt" | "lte" => match value.parse::<f64>() {
                // Whole numbers stay whole, so that they read back as written.
                Ok(n) if n.is_finite() && n.fract() == 0.0 && n.abs() < 9e15 => {
                    condition["value"] = json!(n as i64)
                }
                Ok(n) if n.is_finite() => condition["value"] = json!(n),
                _ => refused.push(Violation {
                    field: format!("{at}/value"),
                    message: "must be a number".into(),
                }),
            },
            _ => condition["value"] = json!(value),
        }
        items.push(if row.negate {
            json!({ "not": condition })
        } else {
            condition
        });
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    Ok((!items.is_empty()).then(|| json!({ join: items })))
}

/// The row a refusal's pointer (below `/filter`) belongs to, counting only the rows that
/// were sent (empty ones are left out of the record).
pub fn row_of_pointer(pointer: &str, rows: &[FilterRow]) -> Option<usize> {
    let mut parts = pointer.trim_start_matches('/').split('/');
    let (Some("filter"), Some("all" | "any"), Some(index)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let nth: usize = index.parse().ok()?;
    rows.iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .nth(nth)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(negate: bool, field: &str, op: &str, value: &str) -> FilterRow {
        FilterRow {
            negate,
            field: field.into(),
            op: op.into(),
            value: value.into(),
        }
    }

    #[test]
    fn rows_become_the_filter_and_back() {
        let rows = vec![
            row(
                false,
                "messageDeliveryFeedback.messageFailure.type",
                "equals",
                "Hard",
            ),
            FilterRow::default(),
            row(false, "messageExecution.campaignID", "in", "c1, c2"),
            row(true, "retryCount", "gt", "0"),
            row(false, "channel", "exists", ""),
        ];
        let filter = filter_of("all", &rows).unwrap().unwrap();
        assert_eq!(
            filter,
            json!({"all": [
                {"field": "messageDeliveryFeedback.messageFailure.type", "op": "equals", "value": "Hard"},
                {"field": "messageExecution.campaignID", "op": "in", "values": ["c1", "c2"]},
                {"not": {"field": "retryCount", "op": "gt", "value": 0}},
                {"field": "channel", "op": "exists"}
            ]})
        );
        crate::domain::filter::Filter::compile(&filter, "/filter").unwrap();
        let (join, back) = rows_of(&filter).unwrap();
        assert_eq!(join, "all");
        assert_eq!(back.len(), 4);
        assert_eq!(back[1].value, "c1, c2");
        assert!(back[2].negate && back[2].value == "0");
        assert_eq!(filter_of("any", &[FilterRow::default()]).unwrap(), None);
    }

    #[test]
    fn what_rows_cannot_show_is_none() {
        let nested = json!({"all": [{"any": [{"field": "channel", "op": "exists"}]}]});
        assert_eq!(rows_of(&nested), None);
        let single = json!({"field": "channel", "op": "equals", "value": "sms"});
        assert_eq!(rows_of(&single).unwrap().1.len(), 1);
    }

    #[test]
    fn refusals_point_at_the_rows_that_were_sent() {
        let rows = vec![
            FilterRow::default(),
            row(false, "retryCount", "gt", "many"),
            row(false, "channel", "in", " , "),
        ];
        let refused = filter_of("any", &rows).unwrap_err();
        let pointers: Vec<&str> = refused.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(pointers, ["/filter/any/0/value", "/filter/any/1/values"]);
        assert_eq!(row_of_pointer(pointers[0], &rows), Some(1));
        assert_eq!(row_of_pointer(pointers[1], &rows), Some(2));
        assert_eq!(row_of_pointer("/filter", &rows), None);
    }
}
