//! Lookups larger than the cluster's `max_batch_keys`: split into lookups of at most that
//! many keys (their as-of times with them), answered separately, and joined back in key
//! order.

use quiver_proto::packed::ColumnBuilder;

use super::{AsOfSpec, Lookup, LookupResult};
use crate::error::ClientError;
use crate::watermark::Watermarks;

impl Lookup {
    /// This lookup as lookups of at most `max_keys` keys each, in key order (per-key
    /// as-of times split with their keys; every other setting copied). One lookup if it
    /// already fits, or `max_keys` is 0.
    pub fn split(&self, max_keys: usize) -> Vec<Lookup> {
        let rows = self.rows();
        let per_key = self.as_of.as_ref().filter(|a| !a.key_times.is_empty());
        // A count of per-key times (or of an entity's keys) that does not match the rows
        // is left whole, for the client's check to refuse with the real counts.
        let mismatched = per_key.is_some_and(|a| a.key_times.len() != rows)
            || self.keys_by_entity.iter().any(|(_, k)| k.len() != rows);
        if max_keys == 0 || rows <= max_keys || mismatched {
            return vec![self.clone()];
        }
        (0..rows)
            .step_by(max_keys)
            .map(|start| {
                let range = start..(start + max_keys).min(rows);
                let as_of = self.as_of.as_ref().map(|a| AsOfSpec {
                    key_times: match per_key {
                        Some(_) => a.key_times[range.clone()].to_vec(),
                        None => Vec::new(),
                    },
                    ..*a
                });
                Lookup {
                    features: self.features.clone(),
                    feature_service: self.feature_service.clone(),
                    keys: self.keys.get(range.clone()).unwrap_or_default().to_vec(),
                    min_watermarks: self.min_watermarks.clone(),
                    deadline: self.deadline,
                    event_times: self.event_times,
                    bypass_cache: self.bypass_cache,
                    as_of,
                    keys_by_entity: self
                        .keys_by_entity
                        .iter()
                        .map(|(e, k)| (e.clone(), k[range.clone()].to_vec()))
                        .collect(),
                }
            })
            .collect()
    }

    /// Rows the lookup asks for: its keys, or each entity's keys.
    pub(crate) fn rows(&self) -> usize {
        self.keys_by_entity
            .first()
            .map_or(self.keys.len(), |(_, k)| k.len())
    }
}

impl LookupResult {
    /// Joins the answers of [`Lookup::split`]'s parts, in order: their rows one after
    /// the other, their watermarks merged.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`] if the parts do not have the same columns (names
    /// and types, in order).
    pub fn concat(mut parts: Vec<LookupResult>) -> Result<LookupResult, ClientError> {
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        let Some(first) = parts.first() else {
            return Ok(LookupResult::from_columns(Vec::new(), 0, Watermarks::new()));
        };
        let rows: usize = parts.iter().map(LookupResult::row_count).sum();
        let mut watermarks = Watermarks::new();
        for p in &parts {
            watermarks.merge(p.watermarks());
            let same = p.column_count() == first.column_count()
                && (0..p.column_count()).all(|c| {
                    let (a, b) = (p.column(c), first.column(c));
                    a.map(|a| (&a.name, a.r#type)) == b.map(|b| (&b.name, b.r#type))
                });
            if !same {
                return Err(ClientError::InvalidRequest(
                    "the parts of a split lookup answered different columns".into(),
                ));
            }
        }
        let mut columns = Vec::with_capacity(first.column_count());
        for c in 0..first.column_count() {
            let head = first.column(c).expect("checked");
            let event_times = parts.iter().any(|p| {
                p.column(c)
                    .is_some_and(|x| !x.event_times_micros.is_empty())
            });
            let mut b =
                ColumnBuilder::new(head.name.clone(), head.feature_type(), rows, event_times);
            for p in &parts {
                let col = p.column(c).expect("checked");
                for r in 0..p.row_count() {
                    b.push_row_of(col, r);
                }
            }
            columns.push(b.finish());
        }
        let versions = first.view_versions().to_vec();
        Ok(LookupResult::from_columns(columns, rows, watermarks).with_view_versions(versions))
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::packed::ColumnBuilder;
    use quiver_proto::v1::{FeatureStatus, FeatureType};

    use super::*;

    #[test]
    fn split_keeps_key_order_and_per_key_times() {
        let l = Lookup::features(["v:a"])
            .keys(["k0", "k1", "k2", "k3", "k4"])
            .as_of_per_key([10, 11, 12, 13, 14])
            .exclude_late_arrivals(true)
            .event_times(true);
        let parts = l.split(2);
        assert_eq!(parts.len(), 3);
        let keys: Vec<_> = parts.iter().flat_map(|p| p.keys.clone()).collect();
        assert_eq!(keys, l.keys);
        let times: Vec<_> = parts
            .iter()
            .flat_map(|p| p.as_of.clone().unwrap().key_times)
            .collect();
        assert_eq!(times, vec![10, 11, 12, 13, 14]);
        assert!(
            parts
                .iter()
                .all(|p| p.event_times && p.features == l.features)
        );
        assert!(
            parts
                .iter()
                .all(|p| p.as_of.as_ref().unwrap().exclude_late_arrivals)
        );
        assert_eq!(l.split(5).len(), 1);
        let bad = Lookup::features(["v:a"])
            .keys(["a", "b", "c"])
            .as_of_per_key([1]);
        assert_eq!(bad.split(1).len(), 1, "left whole for the check to refuse");
        assert_eq!(l.split(0).len(), 1);
        // One time for every key is copied to every part.
        let one = Lookup::features(["v:a"])
            .keys(["a", "b", "c"])
            .as_of_micros(7);
        assert!(
            one.split(1)
                .iter()
                .all(|p| p.as_of.as_ref().unwrap().time == 7)
        );
    }

    fn part(values: &[Option<i64>]) -> LookupResult {
        let mut b = ColumnBuilder::new("v:a".into(), FeatureType::Int64, values.len(), false);
        for v in values {
            match v {
                Some(v) => b.push_i64(*v, 0),
                None => b.push_missing(FeatureStatus::NotFound, 0),
            }
        }
        LookupResult::from_columns(vec![b.finish()], values.len(), Watermarks::new())
    }

    #[test]
    fn concat_joins_rows_in_order() {
        let joined = LookupResult::concat(vec![part(&[Some(1), None]), part(&[Some(3)])]).unwrap();
        assert_eq!(joined.row_count(), 3);
        assert_eq!(joined.i64(0, 0), Some(1));
        assert_eq!(joined.status(1, 0), FeatureStatus::NotFound);
        assert_eq!(joined.i64(2, 0), Some(3));
        let mut other = ColumnBuilder::new("v:b".into(), FeatureType::Int64, 1, false);
        other.push_i64(1, 0);
        let odd = LookupResult::from_columns(vec![other.finish()], 1, Watermarks::new());
        assert!(LookupResult::concat(vec![part(&[Some(1)]), odd]).is_err());
    }
}
