//! Where a reconcile pass runs its scripts: one shell session per pass on root logins, a
//! channel per script otherwise. Owns that choice and the redaction of remote output; must not
//! decide what a pass runs (that is `reconcile`'s job; this module only foresees, from the
//! same digests, whether anything will run after the probe).

use std::time::Duration;

use crate::component::{self, Pending, Run};
use crate::desired::{DEFAULT_COMPONENT_TIMEOUT, DesiredState};
use crate::detect;
use crate::ssh::{ExecOutput, ExecRequest, Shell, Target};
use crate::status::ObservedStatus;

use super::{Context, Plan};

/// True unless every component is applied and in sync (so that the pass, which follows the
/// same `plans`, runs no script after the probe) and no dropped component is to be pruned.
fn scripts_may_follow(desired: &DesiredState, status: &ObservedStatus, plans: &[Plan]) -> bool {
    to_prune(desired, status).next().is_some()
        || plans
            .iter()
            .any(|plan| plan.as_ref().is_ok_and(|p| p.pending != Pending::InSync))
}

/// The components dropped from the list whose removal script the pass runs (`prune: true`).
fn to_prune<'s>(desired: &'s DesiredState, status: &'s ObservedStatus) -> impl Iterator<Item = &'s str> + 's {
    status
        .components
        .iter()
        .filter(|s| desired.prune && !desired.components.iter().any(|c| c.name == s.name))
        .map(|s| s.name.as_str())
}

/// A component's deadline; zero in the spec means the default.
fn component_deadline(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        DEFAULT_COMPONENT_TIMEOUT
    } else {
        timeout
    }
}

/// Where a pass runs its scripts. On a root login, one shell session carries the probe and
/// every component of the pass (see [`crate::ssh::Shell`]): the server starts one session per
/// pass instead of one per script. Otherwise, and once a session has ended, every script gets
/// a channel of its own (with sudo, the watchdog must run inside it for each script).
pub(crate) struct Scripts<'a> {
    ctx: &'a Context,
    target: &'a Target,
    /// The budget of the session still to open: the probe's deadline plus twice every
    /// component's (a check run may be followed by an apply run) plus a removal's for every
    /// component to prune. `None`: no session.
    session_budget: Option<Duration>,
    shell: Option<Shell>,
}

impl<'a> Scripts<'a> {
    /// A channel per script.
    fn channels(ctx: &'a Context, target: &'a Target) -> Scripts<'a> {
        Scripts {
            ctx,
            target,
            session_budget: None,
            shell: None,
        }
    }

    /// For one pass over `desired` and its `plans`: a session on root logins when a script may
    /// follow the probe. A pass with every component in sync runs the probe alone, on its own
    /// channel, which costs the server less than a session's framing.
    pub(super) fn for_pass(
        ctx: &'a Context,
        target: &'a Target,
        desired: &DesiredState,
        status: &ObservedStatus,
        plans: &[Plan],
    ) -> Scripts<'a> {
        let session = target.user == "root" && scripts_may_follow(desired, status, plans);
        let session_budget = session.then(|| {
            let components = desired.components.iter().map(|c| component_deadline(c.timeout));
            let removals = to_prune(desired, status).map(|_| DEFAULT_COMPONENT_TIMEOUT);
            components
                .clone()
                .chain(components)
                .chain(removals)
                .fold(detect::PROBE_DEADLINE, Duration::saturating_add)
        });
        Scripts {
            session_budget,
            ..Scripts::channels(ctx, target)
        }
    }

    /// Runs `request` (a script for `sh -s` on stdin) in the session, opening it on first use,
    /// or on a channel of its own.
    pub(super) async fn run(&mut self, request: ExecRequest) -> Result<ExecOutput, crate::ssh::SshError> {
        debug_assert_eq!(request.command, crate::ssh::SCRIPT_ON_STDIN);
        if let Some(budget) = self.session_budget.take() {
            let shell = self.ctx.transport.shell(self.target, budget, request.deadline).await?;
            self.shell = Some(shell);
        }
        match &mut self.shell {
            // A script whose deadline would outlast the session's budget goes on its own
            // channel, with its own watchdog.
            Some(shell) if shell.is_open() && shell.time_left() >= request.deadline => {
                shell.run(&request.stdin, request.deadline).await
            }
            _ => self.ctx.transport.exec(self.target, request).await,
        }
    }

    /// Runs one component script with its environment and secrets inside stdin and its
    /// deadline. The output is redacted here, before anyone can log or store it: the one
    /// chokepoint for remote output.
    pub(super) async fn execute(&mut self, run: Run<'_>, script: &[u8]) -> Result<ExecOutput, crate::ssh::SshError> {
        let request = ExecRequest {
            command: crate::ssh::SCRIPT_ON_STDIN.to_owned(),
            deadline: component_deadline(run.component.timeout),
            stdin: component::stdin_for(run, script),
            sudo: true,
        };
        let mut out = self.run(request).await?;
        let redactor = &self.ctx.redactor;
        if !redactor.is_empty() {
            out.stdout = redactor.redact(&String::from_utf8_lossy(&out.stdout)).into_bytes();
            out.stderr = redactor.redact(&String::from_utf8_lossy(&out.stderr)).into_bytes();
        }
        Ok(out)
    }

    /// Ends the session, if one was opened.
    pub(super) async fn finish(self) {
        if let Some(shell) = self.shell {
            shell.finish().await;
        }
    }
}
