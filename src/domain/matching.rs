//! "Which events are delivered": the join of an event with its org's webhook and its
//! campaign's opt-in, as one pure decision.

use super::config::{CampaignConfig, WebhookConfig};
use super::event::FeedbackEvent;
use super::filter::Subject;
use super::outcome::Reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Deliver,
    Skip(Reason),
}

/// Decides whether `event` is delivered given the current config.
///
/// Checks run from the event's own properties to the config, so the reason names the first
/// thing an operator would have to change.
pub fn decide(
    event: &FeedbackEvent,
    webhook: Option<&WebhookConfig>,
    campaign: Option<&CampaignConfig>,
) -> Decision {
    if event.execution().message_type.as_deref() != Some("transactional") {
        return Decision::Skip(Reason::NotTransactional);
    }
    let Some(webhook) = webhook else {
        return Decision::Skip(Reason::NoWebhook);
    };
    if !webhook.enabled {
        return Decision::Skip(Reason::WebhookDisabled);
    }
    let Some(channel) = event.channel().filter(|c| webhook.wants_channel(c)) else {
        return Decision::Skip(Reason::ChannelNotSelected);
    };
    let Some(status) = event.feedback_status().filter(|s| webhook.wants_status(s)) else {
        return Decision::Skip(Reason::EventNotSelected);
    };
    if !campaign.is_some_and(|c| c.webhooks_enabled) {
        return Decision::Skip(Reason::CampaignNotEnabled);
    }
    let subject = Subject {
        event,
        channel,
        status,
    };
    if webhook.filter.as_ref().is_some_and(|f| !f.admits(&subject)) {
        return Decision::Skip(Reason::Filtered);
    }
    Decision::Deliver
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::{sample_campaign, sample_webhook};
    use crate::domain::event::tests::{parse_value, spec_event};
    use serde_json::{json, Value};

    fn webhook(v: &Value) -> WebhookConfig {
        serde_json::from_value(v.clone()).unwrap()
    }

    fn campaign(v: &Value) -> CampaignConfig {
        serde_json::from_value(v.clone()).unwrap()
    }

    fn run(event: &Value, w: Option<&Value>, c: Option<&Value>) -> Decision {
        let e = parse_value(event).unwrap();
        let w = w.map(webhook);
        let c = c.map(campaign);
        decide(&e, w.as_ref(), c.as_ref())
    }

    #[test]
    fn the_spec_example_is_delivered() {
        let d = run(
            &spec_event(),
            Some(&sample_webhook()),
            Some(&sample_campaign()),
        );
        assert_eq!(d, Decision::Deliver);
    }

    #[test]
    fn each_skip_reason() {
        let (e, w, c) = (spec_event(), sample_webhook(), sample_campaign());

        let mut marketing = e.clone();
        marketing["_experience"]["customerJourneyManagement"]["messageExecution"]["messageType"] =
            json!("marketing");
        assert_eq!(
            run(&marketing, Some(&w), Some(&c)),
            Decision::Skip(Reason::NotTransactional)
        );

        assert_eq!(run(&e, None, Some(&c)), Decision::Skip(Reason::NoWebhook));

        let mut disabled = w.clone();
        disabled["enabled"] = json!(false);
        assert_eq!(
            run(&e, Some(&disabled), Some(&c)),
            Decision::Skip(Reason::WebhookDisabled)
        );

        let mut sms_only = w.clone();
        sms_only["channels"] = json!(["sms"]);
        assert_eq!(
            run(&e, Some(&sms_only), Some(&c)),
            Decision::Skip(Reason::ChannelNotSelected)
        );

        let mut sent_only = w.clone();
        sent_only["events"] = json!(["sent"]);
        assert_eq!(
            run(&e, Some(&sent_only), Some(&c)),
            Decision::Skip(Reason::EventNotSelected)
        );

        assert_eq!(
            run(&e, Some(&w), None),
            Decision::Skip(Reason::CampaignNotEnabled)
        );
        // The filter comes last: a campaign that is not enabled says so first.
        let mut sms_filter = w.clone();
        sms_filter["filter"] = json!({"field": "channel", "op": "equals", "value": "sms"});
        assert_eq!(
            run(&e, Some(&sms_filter), Some(&c)),
            Decision::Skip(Reason::Filtered)
        );
        assert_eq!(
            run(&e, Some(&sms_filter), None),
            Decision::Skip(Reason::CampaignNotEnabled)
        );
        sms_filter["filter"]["value"] = json!("email");
        assert_eq!(run(&e, Some(&sms_filter), Some(&c)), Decision::Deliver);
        let mut off = c.clone();
        off["webhooksEnabled"] = json!(false);
        assert_eq!(
            run(&e, Some(&w), Some(&off)),
            Decision::Skip(Reason::CampaignNotEnabled)
        );
    }

    #[test]
    fn missing_type_channel_or_status_is_skipped_not_delivered() {
        let (w, c) = (sample_webhook(), sample_campaign());
        // The event without `field` at `at` (a JSON pointer).
        let without = |at: &str, field: &str| {
            let mut e = spec_event();
            e.pointer_mut(at)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(field);
            run(&e, Some(&w), Some(&c))
        };
        let cjm = "/_experience/customerJourneyManagement";
        assert_eq!(
            without(&format!("{cjm}/messageExecution"), "messageType"),
            Decision::Skip(Reason::NotTransactional)
        );
        assert_eq!(
            without(cjm, "messageProfile"),
            Decision::Skip(Reason::ChannelNotSelected)
        );

        let mut e = spec_event();
        e["_experience"]["customerJourneyManagement"]["messageDeliveryfeedback"]
            ["feedbackStatus"] = json!("exclude");
        assert_eq!(
            run(&e, Some(&w), Some(&c)),
            Decision::Skip(Reason::EventNotSelected)
        );
    }
}
