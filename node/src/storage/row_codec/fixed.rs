//! Rows of a fixed layout. When every feature of a view has a fixed-width stored type
//! (bool: tag + 1 byte, float64: tag + 8 bytes), a row holding every feature has a known
//! length and each feature a known offset. The read path reads such a row's values at
//! their offsets, with no walk over the features before them; any other row (a null, a
//! row written before a feature was appended, a tombstone) is read with
//! [`super::RowFields`].

use super::{HEADER_LEN, RowHeader, decode_header};
use crate::registry::FeatureType;

/// Tag of a stored bool.
const TAG_BOOL: u8 = 1;
/// Tag of a stored float64.
const TAG_FLOAT64: u8 = 3;

/// Where every feature of a view's rows sits when all are present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedLayout {
    /// Bytes of such a row, header included.
    len: usize,
    /// The feature count as such a row stores it (a varint) after the header.
    count: Vec<u8>,
    /// Per feature, in the view's order: the offset of its tag in the row, and the tag.
    fields: Vec<(usize, u8)>,
}

impl FixedLayout {
    /// The layout of rows of features typed `types` (the view's, in order), if every
    /// type is fixed-width and there is at least one.
    pub fn of(types: impl IntoIterator<Item = FeatureType>) -> Option<FixedLayout> {
        let tags: Vec<(u8, usize)> = types
            .into_iter()
            .map(|t| match t {
                FeatureType::Bool => Some((TAG_BOOL, 1)),
                FeatureType::Float64 => Some((TAG_FLOAT64, 8)),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if tags.is_empty() {
            return None;
        }
        let mut count = Vec::new();
        super::put_varint(&mut count, tags.len() as u64);
        let mut at = HEADER_LEN + count.len();
        let fields = tags
            .into_iter()
            .map(|(tag, width)| {
                let field = (at, tag);
                at += 1 + width;
                field
            })
            .collect();
        Some(FixedLayout {
            len: at,
            count,
            fields,
        })
    }

    /// The header of `row` if it is a live row of exactly this layout: the length, the
    /// feature count and every feature's tag as the layout says (so no feature is null).
    /// `None`: read it with [`super::RowFields`] (which also reports a corrupt row).
    #[inline]
    pub fn header(&self, row: &[u8]) -> Option<RowHeader> {
        if row.len() != self.len || row[HEADER_LEN..HEADER_LEN + self.count.len()] != self.count {
            return None;
        }
        let header = decode_header(row).ok().filter(|h| !h.tombstone)?;
        self.fields
            .iter()
            .all(|&(at, tag)| row[at] == tag)
            .then_some(header)
    }

    /// Feature `feature` of a row [`FixedLayout::header`] accepted, which the layout has
    /// as a float64.
    #[inline]
    pub fn f64(&self, row: &[u8], feature: usize) -> f64 {
        let at = self.fields[feature].0 + 1;
        f64::from_le_bytes(row[at..at + 8].try_into().expect("eight bytes"))
    }

    /// Feature `feature` of a row [`FixedLayout::header`] accepted, which the layout has
    /// as a bool.
    #[inline]
    pub fn bool(&self, row: &[u8], feature: usize) -> bool {
        row[self.fields[feature].0 + 1] != 0
    }

    /// Whether the layout has feature `feature` as a float64 (else as a bool).
    pub fn is_f64(&self, feature: usize) -> bool {
        self.fields[feature].1 == TAG_FLOAT64
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::v1::value::Kind;

    use super::super::{RowFields, encode_row, encode_tombstone};
    use super::*;
    use crate::storage::row_codec::FieldRef;

    /// A row's values at the layout's offsets are what the feature walk reads; rows
    /// that are not of the layout are refused.
    #[test]
    fn offsets_read_what_the_walk_reads() {
        let types = [
            FeatureType::Float64,
            FeatureType::Bool,
            FeatureType::Float64,
            FeatureType::Bool,
        ];
        let layout = FixedLayout::of(types).expect("fixed-width");
        let values = vec![
            Some(Kind::Float64Value(-0.0)),
            Some(Kind::BoolValue(true)),
            Some(Kind::Float64Value(f64::from_bits(0x7ff8_0000_0000_0001))),
            Some(Kind::BoolValue(false)),
        ];
        let mut row = Vec::new();
        encode_row(77, &values, &mut row);
        let header = layout.header(&row).expect("every feature present");
        assert_eq!(header.event_time_micros, 77);
        let (_, mut walk) = RowFields::open(&row).unwrap();
        for (f, t) in types.iter().enumerate() {
            match (walk.read(f).unwrap(), t) {
                (FieldRef::Float64(v), FeatureType::Float64) => {
                    assert!(layout.is_f64(f));
                    assert_eq!(layout.f64(&row, f).to_bits(), v.to_bits());
                }
                (FieldRef::Bool(v), FeatureType::Bool) => {
                    assert!(!layout.is_f64(f));
                    assert_eq!(layout.bool(&row, f), v);
                }
                other => panic!("feature {f}: {other:?}"),
            }
        }
        // A null, a missing last feature (written before it was appended), one feature
        // too many, a value of another type in the same bytes, a tombstone, another
        // format version, a truncated row: none is of the layout.
        let mut refused = Vec::new();
        let mut with = |values: &[Option<Kind>]| {
            let mut r = Vec::new();
            encode_row(77, values, &mut r);
            refused.push(r);
        };
        let mut null = values.clone();
        null[1] = None;
        with(&null);
        with(&values[..3]);
        let mut more = values.clone();
        more.push(Some(Kind::BoolValue(true)));
        with(&more);
        let mut other = values.clone();
        other[0] = Some(Kind::Int64Value(1));
        with(&other);
        let mut retagged = row.clone();
        retagged[HEADER_LEN + 1 + 9] = 2; // the bool's tag as an int64: one byte follows
        refused.push(retagged);
        let mut tomb = Vec::new();
        encode_tombstone(77, &mut tomb);
        refused.push(tomb);
        let mut version = row.clone();
        version[0] = 9;
        refused.push(version);
        refused.push(row[..row.len() - 1].to_vec());
        for (i, r) in refused.iter().enumerate() {
            assert_eq!(layout.header(r), None, "row {i} taken for the layout");
        }
    }

    #[test]
    fn only_views_of_fixed_width_features_have_a_layout() {
        assert!(FixedLayout::of([FeatureType::Float64; 200]).is_some());
        assert_eq!(FixedLayout::of([]), None);
        for t in FeatureType::ALL {
            let fixed = matches!(t, FeatureType::Bool | FeatureType::Float64);
            assert_eq!(
                FixedLayout::of([FeatureType::Float64, t]).is_some(),
                fixed,
                "{t:?}"
            );
        }
        // 200 features: the count takes two bytes, and the offsets follow it.
        let layout = FixedLayout::of([FeatureType::Float64; 200]).unwrap();
        let values = vec![Some(Kind::Float64Value(1.5)); 200];
        let mut row = Vec::new();
        encode_row(1, &values, &mut row);
        assert!(layout.header(&row).is_some());
        assert_eq!(layout.f64(&row, 199), 1.5);
    }
}
