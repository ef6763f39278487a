//! Lookups whose features span entities — a feature service over `user` and `merchant`
//! views, as Feast's entity rows with several join keys. Each row carries one key per
//! entity ([`Lookup::entity_keys_of`]); the lookup is split into one lookup per entity
//! (its features, its keys: each shards and fans out on its own) and the answers are
//! joined back column by column in the requested order.

use quiver_proto::v1::EntityKey;

use super::{Lookup, LookupResult};
use crate::error::ClientError;
use crate::watermark::Watermarks;

impl Lookup {
    /// Sets the keys of `entity` for a lookup whose features span several entities: row
    /// *i* of the answer is the *i*-th key of every entity, so each entity gets as many
    /// keys as there are rows. Use [`Lookup::keys`] instead when the features share one
    /// entity.
    pub fn entity_keys_of<K: Into<EntityKey>>(
        mut self,
        entity: impl Into<String>,
        keys: impl IntoIterator<Item = K>,
    ) -> Self {
        let entity = entity.into();
        let keys: Vec<EntityKey> = keys.into_iter().map(Into::into).collect();
        match self.keys_by_entity.iter_mut().find(|(e, _)| *e == entity) {
            Some((_, k)) => *k = keys,
            None => self.keys_by_entity.push((entity, keys)),
        }
        self
    }
}

/// One entity's part of a multi-entity lookup.
pub(crate) struct EntityPart {
    /// The lookup of this entity's features with its keys.
    pub(crate) lookup: Lookup,
    /// Where each of its answer's columns goes in the joined answer.
    pub(crate) positions: Vec<usize>,
}

/// A reference with the entity its view is keyed by and how many columns it answers.
pub(crate) type EntityRef = (String, String, usize);

/// Splits `lookup` (with keys per entity) given its references' entities and widths, in
/// request order. Checks that every entity has keys, every given entity is used, and all
/// have the same number of rows.
///
/// # Errors
/// [`ClientError::InvalidRequest`] naming what is wrong.
pub(crate) fn split_by_entity(
    lookup: &Lookup,
    refs: &[EntityRef],
) -> Result<Vec<EntityPart>, ClientError> {
    let invalid = |m: String| Err(ClientError::InvalidRequest(m));
    if !lookup.keys.is_empty() {
        return invalid(
            "give the keys of one entity (keys) or keys per entity (entity_keys_of), not both"
                .into(),
        );
    }
    let rows = lookup.keys_by_entity[0].1.len();
    if let Some((e, k)) = lookup.keys_by_entity.iter().find(|(_, k)| k.len() != rows) {
        return invalid(format!(
            "entity {e:?} has {} keys and {:?} has {rows}: every entity needs one key per row",
            k.len(),
            lookup.keys_by_entity[0].0
        ));
    }
    let mut parts: Vec<(String, EntityPart)> = Vec::new();
    let mut column = 0;
    for (reference, entity, width) in refs {
        let Some((_, keys)) = lookup.keys_by_entity.iter().find(|(e, _)| e == entity) else {
            return invalid(format!(
                "{reference:?} is keyed by entity {entity:?}, which has no keys in the lookup (entity_keys_of({entity:?}, …))"
            ));
        };
        let part = match parts.iter_mut().find(|(e, _)| e == entity) {
            Some((_, p)) => p,
            None => {
                let mut sub = Lookup::features(Vec::<String>::new()).keys(keys.clone());
                sub.min_watermarks = lookup.min_watermarks.clone();
                sub.deadline = lookup.deadline;
                sub.event_times = lookup.event_times;
                sub.bypass_cache = lookup.bypass_cache;
                sub.as_of = lookup.as_of.clone();
                parts.push((
                    entity.clone(),
                    EntityPart {
                        lookup: sub,
                        positions: Vec::new(),
                    },
                ));
                &mut parts.last_mut().expect("just pushed").1
            }
        };
        part.lookup.features.push(reference.clone());
        part.positions.extend(column..column + width);
        column += width;
    }
    if let Some((e, _)) = lookup
        .keys_by_entity
        .iter()
        .find(|(e, _)| !parts.iter().any(|(p, _)| p == e))
    {
        return invalid(format!(
            "keys were given for entity {e:?}, but no requested feature is keyed by it"
        ));
    }
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

/// Joins the answers of [`split_by_entity`]'s parts: each part's columns into their
/// positions, the watermarks merged.
///
/// # Errors
/// [`ClientError::Rpc`] (`DATA_LOSS`) if a part answered another number of columns or
/// rows than asked (the registry changed between the schema read and the lookup).
pub(crate) fn join(
    answers: Vec<(LookupResult, Vec<usize>)>,
    rows: usize,
) -> Result<LookupResult, ClientError> {
    let width: usize = answers.iter().map(|(_, p)| p.len()).sum();
    let mut columns = vec![None; width];
    let mut watermarks = Watermarks::new();
    // Each entity's views are its own: their versions follow one another.
    let mut versions = Vec::new();
    for (answer, positions) in answers {
        if answer.columns.len() != positions.len() || answer.rows != rows {
            return Err(super::malformed(format!(
                "an entity's part answered {} columns of {} rows, {} of {rows} were asked (the registry changed meanwhile? retry)",
                answer.columns.len(),
                answer.rows,
                positions.len()
            )));
        }
        watermarks.merge(&answer.watermarks);
        versions.extend_from_slice(&answer.view_versions);
        for (c, at) in answer.columns.into_iter().zip(positions) {
            columns[at] = Some(c);
        }
    }
    let columns = columns
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| super::malformed("a multi-entity lookup left a column unanswered"))?;
    Ok(LookupResult::from_columns(columns, rows, watermarks).with_view_versions(versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs() -> Vec<EntityRef> {
        vec![
            ("u:a".into(), "user".into(), 1),
            ("m:*".into(), "merchant".into(), 2),
            ("u:b".into(), "user".into(), 1),
        ]
    }

    #[test]
    fn splits_per_entity_in_first_use_order_with_column_positions() {
        let l = Lookup::feature_service("svc")
            .entity_keys_of("merchant", ["m1", "m2"])
            .entity_keys_of("user", ["u1", "u2"])
            .event_times(true);
        let parts = split_by_entity(&l, &refs()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].lookup.features, vec!["u:a", "u:b"]);
        assert_eq!(
            parts[0].lookup.keys,
            vec![EntityKey::from("u1"), EntityKey::from("u2")]
        );
        assert_eq!(parts[0].positions, vec![0, 3]);
        assert!(parts[0].lookup.event_times);
        assert_eq!(parts[1].lookup.features, vec!["m:*"]);
        assert_eq!(parts[1].positions, vec![1, 2]);
    }

    #[test]
    fn bad_entity_keys_are_named() {
        let err = |l: Lookup| split_by_entity(&l, &refs()).err().unwrap().to_string();
        let base = || Lookup::feature_service("svc").entity_keys_of("user", ["u1", "u2"]);
        assert!(err(base()).contains("keyed by entity \"merchant\", which has no keys"));
        let e = err(base().entity_keys_of("merchant", ["m1"]));
        assert!(
            e.contains("entity \"merchant\" has 1 keys and \"user\" has 2"),
            "{e}"
        );
        let e = err(base()
            .entity_keys_of("merchant", ["m1", "m2"])
            .entity_keys_of("card", [1i64, 2]));
        assert!(e.contains("keys were given for entity \"card\""), "{e}");
        let e = err(base().entity_keys_of("merchant", ["m1", "m2"]).keys(["x"]));
        assert!(e.contains("not both"), "{e}");
    }
}
