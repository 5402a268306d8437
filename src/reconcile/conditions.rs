//! The pure end of a pass: from what the components did (their steps and states) to the
//! verdict and the `ComponentsReady`, `Drifted` and `Ready` conditions. No I/O, no clock
//! of its own, so every message can be tested the way controller-rs tests a reconciler.
//!
//! The rule it keeps: a status never claims more than the pass saw. "checked in sync" is
//! written only when every component's check (or apply) ran in this pass; otherwise the
//! message says when the oldest verdict was made.

use crate::status::{ComponentState, ConditionStatus, ObservedStatus, ReconcileResult, Timestamp, reasons, types};

use super::{Applied, Step, StepKind};

/// What the component conditions say after a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Ready's status.
    pub ready: bool,
    /// Ready's reason.
    pub reason: &'static str,
    /// Ready's (and ComponentsReady's) message.
    pub message: String,
    /// The pass's result.
    pub result: ReconcileResult,
    /// ComponentsReady.
    pub components_ok: bool,
    /// Drifted: status, reason, message.
    pub drifted: (ConditionStatus, &'static str, String),
}

/// `a, b and c`.
fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// "last checked 4m ago" for the oldest verdict among components not looked at in this pass.
fn oldest_check(steps: &[Step], status: &ObservedStatus, now: Timestamp) -> Option<String> {
    let unchanged: Vec<&str> = steps
        .iter()
        .filter(|s| s.kind == StepKind::Unchanged)
        .map(|s| s.component.as_str())
        .collect();
    if unchanged.is_empty() {
        return None;
    }
    let oldest = status
        .components
        .iter()
        .filter(|c| unchanged.contains(&c.name.as_str()))
        .filter_map(|c| c.last_check_time.or(c.last_applied_at))
        .min();
    Some(match oldest {
        Some(t) => format!("last checked {}", age(t, now)),
        None => "never checked".to_owned(),
    })
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`, measured to `now`.
pub(crate) fn age(then: Timestamp, now: Timestamp) -> String {
    let secs = now.0.duration_since(then.0).map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The verdict of a pass whose components ran (`applied`), given its steps and the
/// status after it.
pub(crate) fn after_components(applied: &Applied, steps: &[Step], status: &ObservedStatus, now: Timestamp) -> Verdict {
    let corrected: Vec<&str> = steps
        .iter()
        .filter(|s| s.kind == StepKind::DriftCorrected)
        .map(|s| s.component.as_str())
        .collect();
    let stale = oldest_check(steps, status, now);
    let (ready, reason, message, result) = match applied {
        Applied::AllReady => {
            let mut message = match (&stale, steps.is_empty()) {
                (_, true) => "no components".to_owned(),
                (None, false) => "every component is applied and was checked in sync in this pass".to_owned(),
                (Some(when), false) => format!("applied; {when}"),
            };
            if !corrected.is_empty() {
                message.push_str(&format!("; drift in {} corrected", list(&corrected)));
            }
            (true, reasons::RECONCILED, message, ReconcileResult::Succeeded)
        }
        Applied::Drifted(names) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            (
                false,
                reasons::DRIFT_FOUND,
                format!("drift found in {} (driftPolicy: report)", list(&names)),
                ReconcileResult::Succeeded,
            )
        }
        Applied::Failed(name, why) => (
            false,
            if steps.iter().any(|s| s.kind == StepKind::Interrupted) {
                reasons::INTERRUPTED
            } else {
                reasons::COMPONENT_FAILED
            },
            format!("{name}: {why}"),
            ReconcileResult::Failed,
        ),
    };
    let still_drifted: Vec<&str> = status
        .components
        .iter()
        .filter(|c| c.state == ComponentState::Drifted)
        .map(|c| c.name.as_str())
        .collect();
    let drifted = if !still_drifted.is_empty() {
        (
            ConditionStatus::True,
            reasons::DRIFT_FOUND,
            format!(
                "drift found in {} and not corrected (driftPolicy: report)",
                list(&still_drifted)
            ),
        )
    } else if !corrected.is_empty() {
        (
            ConditionStatus::False,
            reasons::DRIFT_CORRECTED,
            format!("drift in {} found and corrected", list(&corrected)),
        )
    } else {
        let message = match &stale {
            None => "no drift found: every component was checked in this pass".to_owned(),
            Some(when) => format!("no drift found at the last checks ({when})"),
        };
        (ConditionStatus::False, reasons::IN_SYNC, message)
    };
    Verdict {
        ready,
        reason,
        message,
        result,
        components_ok: !matches!(applied, Applied::Failed(..)),
        drifted,
    }
}

/// Sets ComponentsReady, Drifted and Ready from a verdict.
pub(crate) fn set_component_conditions(
    status: &mut ObservedStatus,
    verdict: &Verdict,
    generation: u64,
    now: Timestamp,
) {
    let (components, components_reason) = if verdict.components_ok {
        (ConditionStatus::True, reasons::ALL_APPLIED)
    } else {
        (ConditionStatus::False, verdict.reason)
    };
    status.set_condition(
        types::COMPONENTS_READY,
        components,
        components_reason,
        &verdict.message,
        generation,
        now,
    );
    let (drift_status, drift_reason, drift_message) = &verdict.drifted;
    status.set_condition(
        types::DRIFTED,
        *drift_status,
        drift_reason,
        drift_message,
        generation,
        now,
    );
    let ready = if verdict.ready {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    status.set_condition(types::READY, ready, verdict.reason, &verdict.message, generation, now);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::status::{CheckResult, ComponentStatus};

    fn at(secs: u64) -> Timestamp {
        Timestamp(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs))
    }

    fn component(name: &str, state: ComponentState, checked: u64) -> ComponentStatus {
        ComponentStatus {
            name: name.to_owned(),
            state,
            applied_digest: Some("sha256:x".into()),
            changed: false,
            duration_ms: None,
            last_applied_at: Some(at(0)),
            last_check_time: Some(at(checked)),
            last_check_result: Some(CheckResult::InSync),
            applied_script: None,
            resources: Vec::new(),
            artifacts: Vec::new(),
            resources_not_listed: 0,
            message: None,
        }
    }

    fn step(name: &str, kind: StepKind) -> Step {
        Step {
            component: name.to_owned(),
            kind,
            detail: String::new(),
            diffs: Vec::new(),
        }
    }

    fn status(components: Vec<ComponentStatus>) -> ObservedStatus {
        ObservedStatus {
            components,
            ..ObservedStatus::default()
        }
    }

    #[test]
    fn in_sync_is_claimed_only_when_every_component_was_checked_in_this_pass() {
        let s = status(vec![
            component("motd", ComponentState::Applied, 1000),
            component("nginx", ComponentState::Applied, 1000),
        ]);
        let all_checked = [step("motd", StepKind::InSync), step("nginx", StepKind::Applied)];
        let v = after_components(&Applied::AllReady, &all_checked, &s, at(1000));
        assert!(v.ready);
        assert_eq!(v.reason, reasons::RECONCILED);
        assert_eq!(
            v.message,
            "every component is applied and was checked in sync in this pass"
        );
        assert_eq!(v.drifted.0, ConditionStatus::False);
        assert_eq!(v.drifted.1, reasons::IN_SYNC);

        // nginx was last looked at 4 minutes before this pass, which did not run it.
        let s = status(vec![
            component("motd", ComponentState::Applied, 1000),
            component("nginx", ComponentState::Applied, 760),
        ]);
        let one_skipped = [step("motd", StepKind::InSync), step("nginx", StepKind::Unchanged)];
        let v = after_components(&Applied::AllReady, &one_skipped, &s, at(1000));
        assert!(v.ready);
        assert_eq!(v.message, "applied; last checked 4m ago");
        assert!(!v.message.contains("in sync"), "{}", v.message);
        assert_eq!(v.drifted.2, "no drift found at the last checks (last checked 4m ago)");
    }

    #[test]
    fn corrected_drift_is_named_and_the_drifted_condition_says_so() {
        let s = status(vec![component("redis", ComponentState::Applied, 1000)]);
        let v = after_components(
            &Applied::AllReady,
            &[step("redis", StepKind::DriftCorrected)],
            &s,
            at(1000),
        );
        assert!(v.ready);
        assert!(v.message.ends_with("; drift in redis corrected"), "{}", v.message);
        assert_eq!(
            v.drifted,
            (
                ConditionStatus::False,
                reasons::DRIFT_CORRECTED,
                "drift in redis found and corrected".to_owned()
            )
        );
    }

    #[test]
    fn reported_drift_keeps_ready_false_and_drifted_true() {
        let s = status(vec![
            component("redis", ComponentState::Drifted, 1000),
            component("nginx", ComponentState::Drifted, 1000),
        ]);
        let v = after_components(
            &Applied::Drifted(vec!["redis".into(), "nginx".into()]),
            &[
                step("redis", StepKind::DriftReported),
                step("nginx", StepKind::DriftReported),
            ],
            &s,
            at(1000),
        );
        assert!(!v.ready);
        assert_eq!(v.result, ReconcileResult::Succeeded);
        assert_eq!(v.reason, reasons::DRIFT_FOUND);
        assert_eq!(v.message, "drift found in redis and nginx (driftPolicy: report)");
        assert_eq!(v.drifted.0, ConditionStatus::True);
        let mut observed = s.clone();
        set_component_conditions(&mut observed, &v, 3, at(1000));
        assert_eq!(
            observed.condition(types::DRIFTED).map(|c| c.status),
            Some(ConditionStatus::True)
        );
        assert_eq!(
            observed.condition(types::READY).map(|c| c.reason.as_str()),
            Some(reasons::DRIFT_FOUND)
        );
    }

    #[test]
    fn a_failure_or_an_interruption_is_not_ready_and_names_the_component() {
        let s = status(vec![component("motd", ComponentState::Failed, 1000)]);
        let v = after_components(
            &Applied::Failed("motd".into(), "exited with status 3".into()),
            &[step("motd", StepKind::Failed)],
            &s,
            at(1000),
        );
        assert!(!v.ready && !v.components_ok);
        assert_eq!(v.result, ReconcileResult::Failed);
        assert_eq!(v.reason, reasons::COMPONENT_FAILED);
        assert_eq!(v.message, "motd: exited with status 3");
        let v = after_components(
            &Applied::Failed("motd".into(), "interrupted".into()),
            &[step("motd", StepKind::Interrupted)],
            &s,
            at(1000),
        );
        assert_eq!(v.reason, reasons::INTERRUPTED);
    }
}
