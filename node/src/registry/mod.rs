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
            .map(|v| v.source.topic.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

/// Resolves one reference (`view:feature` or `view:*`) to `(view, feature index)` pairs.
pub(crate) fn resolve_reference<'a>(
    views: &'a BTreeMap<String, Arc<FeatureView>>,
    reference: &str,
) -> Result<Vec<(&'a Arc<FeatureView>, usize)>, String> {
    let Some((view_name, feature)) = reference.split_once(':') else {
        return Err(format!(
            "feature reference {reference:?} must look like \"view:feature\" or \"view:*\""
        ));
    };
    let view = views.get(view_name).ok_or_else(|| {
        format!("feature reference {reference:?}: view {view_name:?} is not registered (or is still being built)")
    })?;
    if feature == "*" {
        return Ok((0..view.features.len()).map(|i| (view, i)).collect());
    }
    let idx = view.feature_index(feature).ok_or_else(|| {
        format!("feature reference {reference:?}: view {view_name:?} has no feature {feature:?}")
    })?;
    Ok(vec![(view, idx)])
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
                let (snap, _) = validate::apply_to(&RegistrySnapshot::default(), &file)?;
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
        // One writer at a time; readers keep using the old snapshot meanwhile.
        let mut applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        let (next, changes) = validate::apply_to(&current, file)?;
        if dry_run || changes.is_empty() {
            return Ok(changes);
        }
        let merged = merge(&applied, file);
        if let Some(path) = &self.inner.path {
            persist(path, &merged)?;
        }
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
    let (current, _) = validate::apply_to(&RegistrySnapshot::default(), base)?;
    let (next, changes) = validate::apply_to(&current, update)?;
    Ok((merge(base, update), next, changes))
}

impl Registry {
    /// Replaces the whole registry with `file`, as committed by the control plane, and
    /// publishes it. Not persisted locally: the Raft state is the source of truth.
    ///
    /// # Errors
    /// If `file` does not validate (it always does when it came from the state machine).
    pub fn replace(&self, file: DefinitionFile) -> Result<(), RegistryError> {
        let mut applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        let (mut next, _) = validate::apply_to(&RegistrySnapshot::default(), &file)?;
        let current = self.snapshot();
        next.generation = current.generation + 1;
        *applied = file;
        let generation = next.generation;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.inner.changes.send_replace(generation);
        Ok(())
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
    upsert(&mut out.pending_views, &newer, |v| &v.name);
    upsert(&mut out.pending_views, &update.pending_views, |v| &v.name);
    upsert(&mut out.feature_services, &update.feature_services, |s| {
        &s.name
    });
    out
}

/// Promotes the pending `version` of view `name` to serving in `file`.
///
/// # Errors
/// [`RegistryError::NotFound`] if no such pending version exists.
pub fn promote_definition(
    file: &DefinitionFile,
    name: &str,
    version: u32,
) -> Result<DefinitionFile, RegistryError> {
    let pos = file
        .pending_views
        .iter()
        .position(|v| v.name == name && v.version.unwrap_or(1) == version)
        .ok_or_else(|| {
            RegistryError::NotFound(format!("view {name:?} has no pending version {version}"))
        })?;
    let mut out = file.clone();
    let def = out.pending_views.remove(pos);
    upsert(&mut out.views, std::slice::from_ref(&def), |v| &v.name);
    Ok(out)
}

impl Registry {
    /// Promotes a pending view version to serving (static mode; cluster mode promotes
    /// through the replicated state) and persists the registry.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] if no such pending version exists, or an I/O error.
    pub fn promote(&self, name: &str, version: u32) -> Result<(), RegistryError> {
        let mut applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        let promoted = promote_definition(&applied, name, version)?;
        let (mut next, _) = validate::apply_to(&RegistrySnapshot::default(), &promoted)?;
        if let Some(path) = &self.inner.path {
            persist(path, &promoted)?;
        }
        next.generation = self.snapshot().generation + 1;
        *applied = promoted;
        let generation = next.generation;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.inner.changes.send_replace(generation);
        Ok(())
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
