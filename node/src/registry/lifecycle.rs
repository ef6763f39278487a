//! A view's versions over time: promotion, rollback, deletion, retention and dropping,
//! as pure functions of the definitions (the replicated state machine and the static
//! registry both call them, so every member computes the same result).
//!
//! A version is *serving* (one per view), *pending* (being re-ingested beside it),
//! *retained* (it served before; its rows are kept and kept current, so a rollback serves
//! it again at once) or *dropped* (its rows are deleted on every replica; its number is
//! never used again). See docs/REGISTRY.md, "Version lifecycle".

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::definition::{DefinitionFile, ViewDef};
use super::model::FeatureView;
use super::{RegistryError, RegistrySnapshot};

/// `[[retained_view]]`: a version that served before, and since when it no longer does.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetainedViewDef {
    /// When another version took over (or the view was deleted), ms since the epoch.
    pub retired_at_ms: i64,
    /// Its definition.
    pub view: ViewDef,
}

/// `[[dropped_view_version]]`: a version whose rows are deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DroppedVersion {
    /// View name.
    pub view: String,
    /// Version.
    pub version: u32,
}

/// A retained version, validated.
#[derive(Debug, Clone)]
pub struct RetainedVersion {
    /// The version's definition.
    pub view: Arc<FeatureView>,
    /// When it stopped serving, ms since the epoch.
    pub retired_at_ms: i64,
}

fn version_of(def: &ViewDef) -> u32 {
    def.version.unwrap_or(1)
}

/// Moves the serving definition of `name` (if any) to the retained ones.
fn retire_serving(out: &mut DefinitionFile, name: &str, at_ms: i64) {
    if let Some(pos) = out.views.iter().position(|v| v.name == name) {
        let view = out.views.remove(pos);
        out.retained_views.push(RetainedViewDef {
            retired_at_ms: at_ms,
            view,
        });
    }
}

/// Promotes the pending `version` of view `name` to serving; the version serving until
/// then is retained.
///
/// # Errors
/// [`RegistryError::NotFound`] if no such pending version exists.
pub fn promote(
    file: &DefinitionFile,
    name: &str,
    version: u32,
    at_ms: i64,
) -> Result<DefinitionFile, RegistryError> {
    let pos = file
        .pending_views
        .iter()
        .position(|v| v.name == name && version_of(v) == version)
        .ok_or_else(|| {
            RegistryError::NotFound(format!("view {name:?} has no pending version {version}"))
        })?;
    let mut out = file.clone();
    let def = out.pending_views.remove(pos);
    retire_serving(&mut out, name, at_ms);
    out.views.push(def);
    Ok(out)
}

/// Serves a retained version of `name` again — `to`, or the one retired last — and
/// retains the version serving until then. Returns the new file and the version now
/// serving. A deleted view (nothing serving) is restored this way.
///
/// # Errors
/// [`RegistryError::NotFound`] if the view has no retained version (or not `to`),
/// [`RegistryError::Invalid`] if `to` is the serving version.
pub fn rollback(
    file: &DefinitionFile,
    name: &str,
    to: Option<u32>,
    at_ms: i64,
) -> Result<(DefinitionFile, u32), RegistryError> {
    let serving = file.views.iter().find(|v| v.name == name).map(version_of);
    let retained: Vec<(usize, &RetainedViewDef)> = file
        .retained_views
        .iter()
        .enumerate()
        .filter(|(_, r)| r.view.name == name)
        .collect();
    let listed = || {
        let mut v: Vec<String> = retained
            .iter()
            .map(|(_, r)| format!("v{}", version_of(&r.view)))
            .collect();
        v.sort();
        v.join(", ")
    };
    if to.is_some() && to == serving {
        return Err(RegistryError::Invalid(format!(
            "view {name:?}: version {} already serves",
            to.unwrap_or_default()
        )));
    }
    let pick = match to {
        Some(v) => retained.iter().find(|(_, r)| version_of(&r.view) == v),
        None => retained
            .iter()
            .max_by_key(|(_, r)| (r.retired_at_ms, version_of(&r.view))),
    };
    let Some(&(pos, target)) = pick else {
        // With nothing asked for, any retained version is picked: `to` names a missing one.
        return Err(RegistryError::NotFound(match serving {
            _ if !retained.is_empty() => format!(
                "view {name:?} has no retained version {} (retained: {})",
                to.unwrap_or_default(),
                listed()
            ),
            None => format!("view {name:?} is not registered"),
            Some(v) => format!(
                "view {name:?} has no retained version to roll back to (v{v} serves; earlier versions were dropped or never existed)"
            ),
        }));
    };
    let version = version_of(&target.view);
    let mut out = file.clone();
    let def = out.retained_views.remove(pos).view;
    retire_serving(&mut out, name, at_ms);
    out.views.push(def);
    Ok((out, version))
}

/// Deletes view `name`: it stops serving at once (its version is retained, so a rollback
/// within the retention restores it), a version being built is dropped.
///
/// # Errors
/// [`RegistryError::NotFound`] if the view does not serve;
/// [`RegistryError::Incompatible`] while a feature service references it.
pub fn delete_view(
    file: &DefinitionFile,
    name: &str,
    at_ms: i64,
) -> Result<DefinitionFile, RegistryError> {
    if !file.views.iter().any(|v| v.name == name) {
        let retained = file.retained_views.iter().any(|r| r.view.name == name);
        return Err(RegistryError::NotFound(if retained {
            format!(
                "view {name:?} is already deleted (its retained versions are dropped when their retention passes; `quiverctl view rollback {name}` restores it)"
            )
        } else {
            format!("view {name:?} is not registered")
        }));
    }
    let users: Vec<&str> = file
        .feature_services
        .iter()
        .filter(|s| {
            s.features
                .iter()
                .any(|f| f.split_once(':').is_some_and(|(v, _)| view_name(v) == name))
        })
        .map(|s| s.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(RegistryError::Incompatible(format!(
            "view {name:?} is used by feature service(s) {}; change or delete them first",
            users.join(", ")
        )));
    }
    let mut out = file.clone();
    if let Some(pos) = out.pending_views.iter().position(|v| v.name == name) {
        let pending = out.pending_views.remove(pos);
        out.dropped_versions.push(DroppedVersion {
            view: name.to_owned(),
            version: version_of(&pending),
        });
    }
    retire_serving(&mut out, name, at_ms);
    Ok(out)
}

/// Deletes feature service `name` (no data of its own: effective at once).
///
/// # Errors
/// [`RegistryError::NotFound`] if no such service exists.
pub fn delete_feature_service(
    file: &DefinitionFile,
    name: &str,
) -> Result<DefinitionFile, RegistryError> {
    let mut out = file.clone();
    let before = out.feature_services.len();
    out.feature_services.retain(|s| s.name != name);
    if out.feature_services.len() == before {
        return Err(RegistryError::NotFound(format!(
            "feature service {name:?} is not registered"
        )));
    }
    Ok(out)
}

/// Deletes entity `name`.
///
/// # Errors
/// [`RegistryError::NotFound`] if it does not exist; [`RegistryError::Incompatible`]
/// while any version of a view (serving, pending or retained) is keyed by it.
pub fn delete_entity(file: &DefinitionFile, name: &str) -> Result<DefinitionFile, RegistryError> {
    if !file.entities.iter().any(|e| e.name == name) {
        return Err(RegistryError::NotFound(format!(
            "entity {name:?} is not registered"
        )));
    }
    let mut users: Vec<String> = file
        .views
        .iter()
        .chain(&file.pending_views)
        .chain(file.retained_views.iter().map(|r| &r.view))
        .filter(|v| v.entity == name)
        .map(|v| format!("{} v{}", v.name, version_of(v)))
        .collect();
    users.sort();
    users.dedup();
    if !users.is_empty() {
        return Err(RegistryError::Incompatible(format!(
            "entity {name:?} keys view version(s) {}; delete them (and let their retention pass) first",
            users.join(", ")
        )));
    }
    let mut out = file.clone();
    out.entities.retain(|e| e.name != name);
    Ok(out)
}

/// Drops the retained `version` of `name`: every replica deletes its rows.
///
/// # Errors
/// [`RegistryError::NotFound`] if that version is not retained.
pub fn drop_version(
    file: &DefinitionFile,
    name: &str,
    version: u32,
) -> Result<DefinitionFile, RegistryError> {
    let pos = file
        .retained_views
        .iter()
        .position(|r| r.view.name == name && version_of(&r.view) == version)
        .ok_or_else(|| {
            RegistryError::NotFound(format!("view {name:?} has no retained version {version}"))
        })?;
    let mut out = file.clone();
    out.retained_views.remove(pos);
    out.dropped_versions.push(DroppedVersion {
        view: name.to_owned(),
        version,
    });
    Ok(out)
}

/// The retained versions whose retention has passed at `now_ms`, oldest first.
pub fn expired(file: &DefinitionFile, retention: Duration, now_ms: i64) -> Vec<(String, u32)> {
    let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut out: Vec<(i64, String, u32)> = file
        .retained_views
        .iter()
        .filter(|r| r.retired_at_ms.saturating_add(keep_ms) <= now_ms)
        .map(|r| (r.retired_at_ms, r.view.name.clone(), version_of(&r.view)))
        .collect();
    out.sort();
    out.into_iter().map(|(_, n, v)| (n, v)).collect()
}

/// Refuses the node-written sections in a user's definition file.
///
/// # Errors
/// [`RegistryError::Invalid`] naming the section.
pub fn check_user_file(file: &DefinitionFile) -> Result<(), RegistryError> {
    if !file.retained_views.is_empty() || !file.dropped_versions.is_empty() {
        return Err(RegistryError::Invalid(
            "[[retained_view]] and [[dropped_view_version]] are written by quiver, not by definition files (use `quiverctl view rollback` / `view delete`)".into(),
        ));
    }
    Ok(())
}

/// A version number is used once: applying `view` at a version a retained or dropped
/// version of it has (or below the newest such) is refused, unless it is the serving one.
///
/// # Errors
/// [`RegistryError::Incompatible`] naming the next free version.
pub fn check_version_unused(
    current: &RegistrySnapshot,
    view: &FeatureView,
) -> Result<(), RegistryError> {
    if current.views.get(&view.name).map(|v| v.version) == Some(view.version) {
        return Ok(());
    }
    let retained = current.retained.get(&view.name);
    let used = retained
        .into_iter()
        .flat_map(|r| r.keys().copied())
        .chain(
            current
                .dropped
                .iter()
                .filter(|d| d.view == view.name)
                .map(|d| d.version),
        )
        .max();
    match used {
        Some(max) if view.version <= max => {
            let state = if retained.is_some_and(|r| r.contains_key(&view.version)) {
                "is retained: `quiverctl view rollback` serves it again"
            } else {
                "was used before"
            };
            Err(RegistryError::Incompatible(format!(
                "view {:?}: version {} {state}; a new definition needs version {} or higher",
                view.name,
                view.version,
                max.max(current.views.get(&view.name).map_or(0, |v| v.version)) + 1
            )))
        }
        _ => Ok(()),
    }
}

/// Adds the retained and dropped versions of `file` to `next` (a user's file has none).
pub(super) fn load(
    next: &mut RegistrySnapshot,
    file: &DefinitionFile,
    build: impl Fn(&ViewDef) -> Result<FeatureView, String>,
) -> Result<(), RegistryError> {
    for r in &file.retained_views {
        let view = build(&r.view).map_err(RegistryError::Invalid)?;
        next.retained.entry(view.name.clone()).or_default().insert(
            view.version,
            RetainedVersion {
                view: Arc::new(view),
                retired_at_ms: r.retired_at_ms,
            },
        );
    }
    next.dropped.extend(file.dropped_versions.iter().cloned());
    Ok(())
}

/// The view name of a reference's view part (`view` or a pinned `view@3`).
pub fn view_name(view_part: &str) -> &str {
    view_part.split_once('@').map_or(view_part, |(v, _)| v)
}

/// When `base` has a pending version of a view that `pending` replaces with another
/// version, the replaced one is dropped (its rows were only ever being built).
pub(super) fn drop_replaced_pending(
    out: &mut DefinitionFile,
    base: &DefinitionFile,
    pending: &[ViewDef],
) {
    for p in pending {
        if let Some(old) = base
            .pending_views
            .iter()
            .find(|o| o.name == p.name && version_of(o) != version_of(p))
        {
            out.dropped_versions.push(DroppedVersion {
                view: old.name.clone(),
                version: version_of(old),
            });
        }
    }
}

#[cfg(test)]
mod tests;
