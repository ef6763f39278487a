//! The registry: entities, feature views and feature services.
//!
//! The registry is read on every lookup and every ingested record, and changed rarely, so
//! readers take a cheap [`Arc`] snapshot and writers swap in a new one. Changes are
//! validated as a whole first ("all or nothing"), then persisted, then published; the
//! generation number increments on every effective change so the ingest loops notice
//! new source topics.
//!
//! In this slice the registry is node-local (loaded from definition files and changed
//! through the admin RPC) and persisted in `<data_dir>/registry.json`. The control-plane
//! issue moves the same [`DefinitionFile`] changes into the replicated Raft state; this
//! module's interface ([`Registry::apply`], [`Registry::snapshot`]) stays.

pub mod aggregation;
pub mod definition;
pub mod lifecycle;
pub mod model;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use definition::DefinitionFile;
pub use model::{Entity, Feature, FeatureService, FeatureType, FeatureView, KeyType, RecordFormat};
use tokio::sync::watch;
pub use validate::MAX_FEATURES_PER_VIEW;

/// Errors of registry changes and lookups.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The definition text is not valid TOML for the format.
    #[error("definition file is not valid: {0}")]
    Parse(String),
    /// A definition breaks a validation rule.
    #[error("{0}")]
    Invalid(String),
    /// A change conflicts with what is registered.
    #[error("{0}")]
    Incompatible(String),
    /// A referenced object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be persisted or loaded.
    #[error("registry storage at {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// An immutable view of the whole registry.
#[derive(Debug, Clone, Default)]
pub struct RegistrySnapshot {
    /// Increments on every effective change.
    pub generation: u64,
    /// Entities by name.
    pub entities: BTreeMap<String, Entity>,
    /// Feature views by name (the serving version).
    pub views: BTreeMap<String, Arc<FeatureView>>,
    /// New versions being re-ingested, by view name; they replace the serving version when
    /// promoted.
    pub pending: BTreeMap<String, Arc<FeatureView>>,
    /// Feature services by name.
    pub feature_services: BTreeMap<String, Arc<FeatureService>>,
    /// Versions that served before and are kept (rows current) for a rollback or a
    /// pinned read, by view name and version.
    pub retained: BTreeMap<String, BTreeMap<u32, lifecycle::RetainedVersion>>,
    /// Versions whose rows every replica deletes.
    pub dropped: std::collections::BTreeSet<lifecycle::DroppedVersion>,
    /// Orders registry changes across the cluster: the replicated state's count of
    /// registry changes (cluster mode), the generation (static mode). Answers carry it,
    /// so a client assembling parts from several nodes knows which saw the newer registry.
    pub revision: u64,
}

impl RegistrySnapshot {
    /// Returns the views that read `topic`.
    pub fn views_for_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a Arc<FeatureView>> {
        self.views.values().filter(move |v| v.source.topic == topic)
    }

    /// Returns every source topic, sorted and without duplicates.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .views
            .values()
            .chain(self.pending.values())
            .chain(self.retained_versions())
            .map(|v| v.source.topic.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// Every retained version.
    pub fn retained_versions(&self) -> impl Iterator<Item = &Arc<FeatureView>> {
        self.retained
            .values()
            .flat_map(|versions| versions.values().map(|r| &r.view))
    }

    /// Every version whose rows replicas keep current: serving, pending, retained.
    pub fn live_versions(&self) -> impl Iterator<Item = &Arc<FeatureView>> {
        self.views
            .values()
            .chain(self.pending.values())
            .chain(self.retained_versions())
    }
}

/// `(view version, feature index)` pairs a reference resolves to.
pub(crate) type Resolved<'a> = Vec<(&'a Arc<FeatureView>, usize)>;

/// Resolves one reference (`view:feature` or `view:*`) to `(view, feature index)` pairs.
pub(crate) fn resolve_reference<'a>(
    views: &'a BTreeMap<String, Arc<FeatureView>>,
    reference: &str,
) -> Result<Resolved<'a>, String> {
    let Some((view_name, feature)) = reference.split_once(':') else {
        return Err(format!(
            "feature reference {reference:?} must look like \"view:feature\" or \"view:*\""
        ));
    };
    let view = views.get(view_name).ok_or_else(|| {
        format!("feature reference {reference:?}: view {view_name:?} is not registered (or is still being built)")
    })?;
    features_of(view, feature, reference)
}

fn features_of<'a>(
    view: &'a Arc<FeatureView>,
    feature: &str,
    reference: &str,
) -> Result<Resolved<'a>, String> {
    if feature == "*" {
        return Ok((0..view.features.len()).map(|i| (view, i)).collect());
    }
    let idx = view.feature_index(feature).ok_or_else(|| {
        format!(
            "feature reference {reference:?}: view {:?} version {} has no feature {feature:?}",
            view.name, view.version
        )
    })?;
    Ok(vec![(view, idx)])
}

/// Resolves a lookup's reference, which may pin a version (`view@3:feature`: the serving
/// version if it is 3, else a retained one). Returns the pairs and whether it was pinned.
pub(crate) fn resolve_read_reference<'a>(
    snap: &'a RegistrySnapshot,
    reference: &str,
) -> Result<(Resolved<'a>, bool), String> {
    let pinned = reference
        .split_once(':')
        .and_then(|(view, feature)| Some((view.split_once('@')?, feature)));
    let Some(((name, version), feature)) = pinned else {
        return resolve_reference(&snap.views, reference).map(|r| (r, false));
    };
    let bad = |m: String| format!("feature reference {reference:?}: {m}");
    let version: u32 = version.parse().map_err(|_| {
        bad(format!(
            "{version:?} is not a version number (pin a version as \"view@3:feature\")"
        ))
    })?;
    let view = match snap.views.get(name) {
        Some(v) if v.version == version => v,
        serving => match snap.retained.get(name).and_then(|r| r.get(&version)) {
            Some(r) => &r.view,
            None => {
                let dropped = lifecycle::DroppedVersion {
                    view: name.to_owned(),
                    version,
                };
                return Err(bad(
                    if snap.pending.get(name).is_some_and(|p| p.version == version) {
                        format!(
                            "version {version} of view {name:?} is still being built; it can be read once it serves"
                        )
                    } else if snap.dropped.contains(&dropped) {
                        format!(
                            "version {version} of view {name:?} was dropped (its retention passed)"
                        )
                    } else {
                        let mut have: Vec<u32> = serving
                            .map(|v| v.version)
                            .into_iter()
                            .chain(
                                snap.retained
                                    .get(name)
                                    .into_iter()
                                    .flat_map(|r| r.keys().copied()),
                            )
                            .collect();
                        have.sort_unstable();
                        format!(
                            "view {name:?} has no version {version} that serves or is retained (readable: {have:?})"
                        )
                    },
                ));
            }
        },
    };
    features_of(view, feature, reference).map(|r| (r, true))
}

/// The node's registry handle: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Arc<RegistrySnapshot>>,
    /// Merged definitions that produced `current`; what is persisted.
    applied: std::sync::Mutex<DefinitionFile>,
    path: Option<PathBuf>,
    changes: watch::Sender<u64>,
}

impl Registry {
    /// An empty registry that is not persisted (tests, benches).
    pub fn in_memory() -> Self {
        Self::with_state(None, RegistrySnapshot::default(), DefinitionFile::default())
    }

    fn with_state(path: Option<PathBuf>, snap: RegistrySnapshot, applied: DefinitionFile) -> Self {
        let (changes, _) = watch::channel(snap.generation);
        Registry {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(snap)),
                applied: std::sync::Mutex::new(applied),
                path,
                changes,
            }),
        }
    }

    /// Opens the registry persisted at `path`, or an empty one if the file does not exist.
    ///
    /// # Errors
    /// Fails if the file exists but cannot be read or no longer validates.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.to_owned(),
            source,
        };
        let (snap, applied) = match std::fs::read(path) {
            Ok(bytes) => {
                let file: DefinitionFile = serde_json::from_slice(&bytes)
                    .map_err(|e| RegistryError::Parse(format!("{}: {e}", path.display())))?;
                let (mut snap, _) = validate::apply_to(&RegistrySnapshot::default(), &file)?;
                snap.revision = snap.generation;
                (snap, file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (RegistrySnapshot::default(), DefinitionFile::default())
            }
            Err(e) => return Err(io(e)),
        };
        Ok(Self::with_state(Some(path.to_owned()), snap, applied))
    }

    /// Returns the current snapshot.
    pub fn snapshot(&self) -> Arc<RegistrySnapshot> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Subscribes to the generation number, which changes on every effective change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Waits (at most `timeout`) until the published snapshot's revision is at least
    /// `revision`. Whether it got there.
    pub async fn wait_for_revision(&self, revision: u64, timeout: std::time::Duration) -> bool {
        // Subscribed before the check: a publish between the check and the wait still
        // wakes it.
        let mut changes = self.inner.changes.subscribe();
        let reached = async {
            loop {
                if self.snapshot().revision >= revision {
                    return true;
                }
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, reached)
            .await
            .unwrap_or(false)
    }

    /// Parses TOML definitions and applies them (see [`Registry::apply`]).
    ///
    /// # Errors
    /// As [`Registry::apply`], plus [`RegistryError::Parse`].
    pub fn apply_toml(&self, text: &str, dry_run: bool) -> Result<Vec<String>, RegistryError> {
        let file =
            DefinitionFile::from_toml(text).map_err(|e| RegistryError::Parse(e.to_string()))?;
        self.apply(&file, dry_run)
    }

    /// Validates `file` against the current registry and, unless `dry_run`, persists and
    /// publishes the result. All or nothing: on error nothing changes.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] / [`RegistryError::Incompatible`] name the offending
    /// object; [`RegistryError::Io`] if persisting fails (the change is then not applied).
    pub fn apply(
        &self,
        file: &DefinitionFile,
        dry_run: bool,
    ) -> Result<Vec<String>, RegistryError> {
        lifecycle::check_user_file(file)?;
        // One writer at a time; readers keep using the old snapshot meanwhile.
        let mut applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        let (mut next, changes) = validate::apply_to(&current, file)?;
        if dry_run || changes.is_empty() {
            return Ok(changes);
        }
        let merged = merge(&applied, file);
        if let Some(path) = &self.inner.path {
            persist(path, &merged)?;
        }
        // A replaced pending version is dropped: the snapshot must list it too.
        next.dropped = merged.dropped_versions.iter().cloned().collect();
        next.revision = next.generation;
        *applied = merged;
        let generation = next.generation;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.inner.changes.send_replace(generation);
        Ok(changes)
    }
}

/// Validates `update` on top of the registry `base` describes, without any handle: the
/// deterministic step the replicated state machine runs. Returns the merged definitions,
/// the resulting snapshot and the list of changes (empty: nothing changed).
///
/// # Errors
/// As [`Registry::apply`].
pub fn validate_merge(
    base: &DefinitionFile,
    update: &DefinitionFile,
) -> Result<(DefinitionFile, RegistrySnapshot, Vec<String>), RegistryError> {
    lifecycle::check_user_file(update)?;
    let (current, _) = validate::apply_to(&RegistrySnapshot::default(), base)?;
    let (mut next, changes) = validate::apply_to(&current, update)?;
    let merged = merge(base, update);
    next.dropped = merged.dropped_versions.iter().cloned().collect();
    Ok((merged, next, changes))
}

impl Registry {
    /// Replaces the whole registry with `file`, as committed by the control plane at
    /// registry `revision`, and publishes it. Not persisted locally: the Raft state is the
    /// source of truth.
    ///
    /// # Errors
    /// If `file` does not validate (it always does when it came from the state machine).
    pub fn replace(&self, file: DefinitionFile, revision: u64) -> Result<(), RegistryError> {
        let mut applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        let (mut next, _) = validate::apply_to(&RegistrySnapshot::default(), &file)?;
        next.generation = self.snapshot().generation + 1;
        next.revision = revision;
        *applied = file;
        self.publish(next);
        Ok(())
    }

    /// Static mode: changes the persisted registry with `change` (a lifecycle step:
    /// promotion, rollback, deletion, dropping), validates, persists and publishes the
    /// result. All or nothing.
    ///
    /// # Errors
    /// What `change` returns, a validation error of its result, or an I/O error.
    pub fn change<T>(
        &self,
        change: impl FnOnce(&DefinitionFile) -> Result<(DefinitionFile, T), RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        let (file, out) = change(&applied)?;
        let (mut next, _) = validate::apply_to(&RegistrySnapshot::default(), &file)?;
        if let Some(path) = &self.inner.path {
            persist(path, &file)?;
        }
        next.generation = self.snapshot().generation + 1;
        next.revision = next.generation;
        *applied = file;
        self.publish(next);
        Ok(out)
    }

    fn publish(&self, next: RegistrySnapshot) {
        let generation = next.generation;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.inner.changes.send_replace(generation);
    }

    /// The definitions the current snapshot was built from.
    pub fn definitions(&self) -> DefinitionFile {
        self.inner
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn upsert<T: Clone>(list: &mut Vec<T>, items: &[T], name: impl Fn(&T) -> &str) {
    for item in items {
        match list.iter_mut().find(|x| name(x) == name(item)) {
            Some(slot) => *slot = item.clone(),
            None => list.push(item.clone()),
        }
    }
}

fn merge(base: &DefinitionFile, update: &DefinitionFile) -> DefinitionFile {
    let mut out = base.clone();
    upsert(&mut out.entities, &update.entities, |e| &e.name);
    // A higher version of a serving view is built first: it goes to pending.
    // So is a new view on a topic existing views already consume (it needs a backfill).
    let (newer, same): (Vec<_>, Vec<_>) = update.views.iter().cloned().partition(|v| {
        let newer_version = base
            .views
            .iter()
            .any(|b| b.name == v.name && v.version.unwrap_or(1) > b.version.unwrap_or(1));
        let new_on_consumed_topic = !base.views.iter().any(|b| b.name == v.name)
            && base.views.iter().any(|b| b.source.topic == v.source.topic);
        newer_version || new_on_consumed_topic
    });
    upsert(&mut out.views, &same, |v| &v.name);
    lifecycle::drop_replaced_pending(&mut out, base, &newer);
    upsert(&mut out.pending_views, &newer, |v| &v.name);
    upsert(&mut out.pending_views, &update.pending_views, |v| &v.name);
    upsert(&mut out.feature_services, &update.feature_services, |s| {
        &s.name
    });
    out
}

impl Registry {
    /// Promotes a pending view version to serving (static mode; cluster mode promotes
    /// through the replicated state) and persists the registry. The version serving
    /// until then is retained.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] if no such pending version exists, or an I/O error.
    pub fn promote(&self, name: &str, version: u32, at_ms: i64) -> Result<(), RegistryError> {
        self.change(|f| Ok((lifecycle::promote(f, name, version, at_ms)?, ())))
    }
}

fn persist(path: &Path, file: &DefinitionFile) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests;
