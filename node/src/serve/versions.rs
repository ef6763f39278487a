//! The view version lifecycle over the admin RPC: rollback, deletion, and the listing of
//! a view's versions. Each change is one lifecycle step (`registry::lifecycle`): checked
//! against this node's registry first (bad input gets its own error code and changes
//! nothing), then proposed through Raft (cluster mode) or applied to the persisted
//! registry (static mode).

use std::sync::Arc;

use quiver_proto::v1::{
    DeleteRequest, ListViewVersionsRequest, ListViewVersionsResponse, RegistryChangeResponse,
    RollbackViewRequest, ViewVersionInfo,
};

use super::ServeError;
use super::admin_service::registry_error;
use crate::control::plane::wall_clock_ms;
use crate::control::state::Command;
use crate::registry::{DefinitionFile, FeatureView, RegistryError, lifecycle};
use crate::security::{Principal, audit};
use crate::state::NodeState;

type Step = Box<dyn FnOnce(&DefinitionFile) -> Result<DefinitionFile, RegistryError> + Send>;

/// Runs one lifecycle step: `step` on this node's definitions as the check, then `command`
/// through Raft, or `step` on the static registry. Returns the changes (audited).
async fn change(
    state: &NodeState,
    principal: &Principal,
    action: &'static str,
    summary: String,
    command: Command,
    step: Step,
) -> Result<Vec<String>, ServeError> {
    let result = run(state, summary, command, step).await;
    let (outcome, detail) = match &result {
        Ok(c) => ("applied", c.join("; ")),
        Err(e) => ("rejected", e.to_string()),
    };
    audit::change(action, &principal.to_string(), outcome, &detail);
    result
}

async fn run(
    state: &NodeState,
    summary: String,
    command: Command,
    step: Step,
) -> Result<Vec<String>, ServeError> {
    if let Some(control) = &state.control {
        step(&control.state().registry).map_err(registry_error)?;
        return ServeError::changes_of(control.propose(command).await);
    }
    // Persisting the registry fsyncs a file: keep it off the async workers.
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || registry.change(|f| Ok((step(f)?, ()))))
        .await
        .map_err(|e| ServeError::Storage(format!("registry change task failed: {e}")))?
        .map_err(registry_error)?;
    Ok(vec![summary])
}

/// `RollbackView`.
pub(super) async fn rollback(
    state: &NodeState,
    principal: &Principal,
    req: RollbackViewRequest,
) -> Result<RegistryChangeResponse, ServeError> {
    let view = req.view;
    let to = (req.to_version > 0).then_some(req.to_version);
    let at_ms = wall_clock_ms();
    // Static mode reports the version the step picked; cluster mode the command's change.
    let picked = lifecycle::rollback(&state.registry.definitions(), &view, to, at_ms)
        .map(|(_, v)| v)
        .ok();
    let command = Command::RollbackView {
        view: view.clone(),
        to,
        by: principal.to_string(),
        at_ms,
    };
    let summary = format!(
        "view {view} v{}: serving again (rollback by {principal})",
        picked.or(to).unwrap_or_default()
    );
    let name = view.clone();
    let step: Step = Box::new(move |f| Ok(lifecycle::rollback(f, &name, to, at_ms)?.0));
    let changes = change(state, principal, "rollback_view", summary, command, step).await?;
    Ok(RegistryChangeResponse { changes })
}

/// `Delete`.
pub(super) async fn delete(
    state: &NodeState,
    principal: &Principal,
    req: DeleteRequest,
) -> Result<RegistryChangeResponse, ServeError> {
    let (name, by, at_ms) = (req.name, principal.to_string(), wall_clock_ms());
    if name.is_empty() {
        return Err(ServeError::InvalidArgument(
            "delete: a name is required".into(),
        ));
    }
    let n = name.clone();
    let (command, step, summary): (Command, Step, String) = match req.kind.as_str() {
        "view" => (
            Command::DeleteView {
                view: name.clone(),
                by,
                at_ms,
            },
            Box::new(move |f| lifecycle::delete_view(f, &n, at_ms)),
            format!("view {name}: deleted (retained until its retention passes)"),
        ),
        "feature_service" => (
            Command::DeleteFeatureService {
                name: name.clone(),
                by,
            },
            Box::new(move |f| lifecycle::delete_feature_service(f, &n)),
            format!("feature service {name}: deleted"),
        ),
        "entity" => (
            Command::DeleteEntity {
                name: name.clone(),
                by,
            },
            Box::new(move |f| lifecycle::delete_entity(f, &n)),
            format!("entity {name}: deleted"),
        ),
        other => {
            return Err(ServeError::InvalidArgument(format!(
                "delete: kind {other:?} is not one of \"view\", \"feature_service\", \"entity\""
            )));
        }
    };
    let changes = change(state, principal, "delete", summary, command, step).await?;
    Ok(RegistryChangeResponse { changes })
}

/// `ListViewVersions`: every version of a view, newest first.
pub(super) fn list(
    state: &NodeState,
    principal: &Principal,
    retention: std::time::Duration,
    req: ListViewVersionsRequest,
) -> Result<ListViewVersionsResponse, ServeError> {
    let name = req.view;
    principal
        .check_views([name.as_str()])
        .map_err(ServeError::PermissionDenied)?;
    let snap = state.registry.snapshot();
    let serving = snap.views.get(&name);
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let info = |v: &Arc<FeatureView>, s: &str| ViewVersionInfo {
        version: v.version,
        state: s.to_owned(),
        // A model of strings, numbers and maps: serialising it cannot fail.
        definition_json: serde_json::to_string_pretty(v.as_ref()).unwrap_or_default(),
        ..Default::default()
    };
    let mut out = Vec::new();
    if let Some(v) = serving {
        out.push(info(v, "serving"));
    }
    if let Some(v) = snap.pending.get(&name) {
        out.push(info(v, "pending"));
    }
    for r in snap
        .retained
        .get(&name)
        .into_iter()
        .flat_map(|m| m.values())
    {
        let mut i = info(&r.view, "retained");
        i.retired_at_ms = r.retired_at_ms;
        i.drop_after_ms = r.retired_at_ms.saturating_add(retention_ms);
        out.push(i);
    }
    out.extend(
        snap.dropped
            .iter()
            .filter(|d| d.view == name)
            .map(|d| ViewVersionInfo {
                version: d.version,
                state: "dropped".into(),
                ..Default::default()
            }),
    );
    if out.is_empty() {
        return Err(ServeError::NotFound(format!(
            "view {name:?} is not registered"
        )));
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.version));
    Ok(ListViewVersionsResponse { versions: out })
}

/// Refuses definitions that would build a view version (a new version, or a new view on a
/// topic already consumed: both re-read the topic from its start) from a topic whose
/// retention already deleted records: the version would lack rows the serving one has.
pub(super) async fn check_rebuildable(
    state: &NodeState,
    file: &DefinitionFile,
) -> Result<(), ServeError> {
    let Some(kafka) = state.kafka.clone() else {
        return Ok(());
    };
    let base = match &state.control {
        Some(c) => c.state().registry.clone(),
        None => state.registry.definitions(),
    };
    let before = crate::registry::validate_merge(&base, &DefinitionFile::default())
        .map_err(registry_error)?
        .1;
    let after = crate::registry::validate_merge(&base, file)
        .map_err(registry_error)?
        .1;
    let built: Vec<(String, u32, String)> = after
        .pending
        .values()
        .filter(|v| {
            before
                .pending
                .get(&v.name)
                .is_none_or(|p| p.version != v.version)
        })
        .map(|v| (v.name.clone(), v.version, v.source.topic.clone()))
        .collect();
    if built.is_empty() {
        return Ok(());
    }
    let p = state.shard_count;
    let starts = tokio::task::spawn_blocking(move || {
        built
            .into_iter()
            .map(|(view, version, topic)| {
                let starts = kafka.log_starts(&topic, p, std::time::Duration::from_secs(5));
                (view, version, topic, starts)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ServeError::Storage(format!("log start check task failed: {e}")))?;
    for (view, version, topic, starts) in starts {
        let starts = starts.map_err(|e| ServeError::Unavailable(e.to_string()))?;
        if let Some((partition, start)) = starts.iter().enumerate().find(|(_, s)| **s > 0) {
            return Err(ServeError::FailedPrecondition(format!(
                "view {view} v{version} would be built by re-reading topic {topic:?} from its start, but partition {partition} now starts at offset {start}: the topic's retention deleted older records, so the version would lack rows the serving one has. Build it from a topic that still holds the whole history (e.g. backfill one with `quiverctl backfill`), or change the view compatibly in place"
            )));
        }
    }
    Ok(())
}
