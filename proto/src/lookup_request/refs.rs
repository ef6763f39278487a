//! [`FeatureRefs`]: a lookup's feature references as one buffer, exactly as field 1 of
//! the request encodes them.

use std::fmt;

/// The key of a field-1 entry: field number 1, length-delimited.
const FIELD_1_KEY: u8 = (1 << 3) | 2;

/// A lookup's feature references (`view:feature`, `view:*`), in order, held as field 1
/// of `GetOnlineFeaturesRequest` encodes them: for each, the field key, its length as a
/// varint and its bytes, in one buffer.
///
/// Decoding a request copies the references into this buffer (one allocation, a
/// `memcpy` each) rather than making each a value of its own, and the node's plan cache
/// is keyed by the buffer: a hit hashes and compares one slice of a few hundred bytes.
/// The encoding is canonical (the shortest varint), so two requests naming the same
/// references in the same order hold the same bytes however a client wrote them; the
/// smart client's `OutgoingLookup::encode_references` writes exactly these bytes.
///
/// A reference is not checked as UTF-8 here: [`crate::lookup_request::LookupRequest::feature`]
/// and the node's plan compiler do that, which a cached list never needs again.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct FeatureRefs {
    encoded: Vec<u8>,
    count: usize,
}

impl FeatureRefs {
    /// References (text, or any bytes a caller sends), in order.
    pub fn from_refs<S: AsRef<[u8]>>(refs: impl IntoIterator<Item = S>) -> Self {
        let mut out = FeatureRefs::default();
        for r in refs {
            out.push(r.as_ref());
        }
        out
    }

    /// Appends one reference.
    pub fn push(&mut self, reference: &[u8]) {
        self.begin(reference.len());
        self.encoded.extend_from_slice(reference);
    }

    /// Writes the key and length of a reference of `len` bytes, whose bytes the caller
    /// appends next.
    fn begin(&mut self, len: usize) {
        self.encoded.push(FIELD_1_KEY);
        prost::encoding::encode_varint(len as u64, &mut self.encoded);
        self.count += 1;
    }

    /// Appends the next `len` bytes of `buf` as one reference (decoding field 1); the
    /// caller checked that `buf` holds them. The first one reserves what is left of the
    /// message, so a request's references take one allocation: the canonical form is
    /// never longer than what was received, and the first reference's key and length,
    /// consumed already, take at most 11 bytes.
    pub(super) fn push_from(&mut self, buf: &mut impl bytes::Buf, len: usize) {
        if self.encoded.capacity() == 0 {
            self.encoded.reserve(buf.remaining() + 11);
        }
        self.begin(len);
        let mut left = len;
        while left > 0 {
            let chunk = buf.chunk();
            let n = chunk.len().min(left);
            self.encoded.extend_from_slice(&chunk[..n]);
            buf.advance(n);
            left -= n;
        }
    }

    /// Appends the field-1 entries that follow in `buf`'s current chunk, whole, up to the
    /// first other field (or incomplete entry), and consumes them: what decoding them one
    /// by one would append, without a `Buf` call per key, length and copy. (tonic hands
    /// the decoder the whole message as one chunk, and clients write a request's
    /// references one after another.)
    pub(super) fn push_run(&mut self, buf: &mut impl bytes::Buf) {
        let chunk = buf.chunk();
        let mut at = 0;
        while chunk.get(at) == Some(&FIELD_1_KEY) {
            let mut rest = &chunk[at + 1..];
            let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
                break;
            };
            let Some(reference) = usize::try_from(len).ok().and_then(|l| rest.get(..l)) else {
                break;
            };
            self.push(reference);
            at = chunk.len() - rest.len() + reference.len();
        }
        buf.advance(at);
    }

    /// How many references.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The references as field 1 of the message encodes them (the plan cache's key).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Each reference's bytes, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            rest: &self.encoded,
        }
    }
}

impl<S: AsRef<[u8]>> FromIterator<S> for FeatureRefs {
    fn from_iter<I: IntoIterator<Item = S>>(refs: I) -> Self {
        FeatureRefs::from_refs(refs)
    }
}

impl fmt::Debug for FeatureRefs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

/// The references of a [`FeatureRefs`], in order.
#[derive(Clone)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The buffer holds only what `begin` and `push`/`push_from` wrote: a key byte,
        // a shortest varint, that many bytes.
        let (_key, mut rest) = self.rest.split_first()?;
        let len =
            prost::encoding::decode_varint(&mut rest).expect("a varint FeatureRefs wrote") as usize;
        let (reference, rest) = rest.split_at(len);
        self.rest = rest;
        Some(reference)
    }
}

impl<'a> IntoIterator for &'a FeatureRefs {
    type Item = &'a [u8];
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::lookup_request::OutgoingLookup;
    use crate::v1::GetOnlineFeaturesRequest;

    #[test]
    fn references_come_back_in_order_and_encode_as_field_1() {
        let refs = ["v:a", "", "vues_é:größe", &"x".repeat(300), "v:*"];
        let held = FeatureRefs::from_refs(refs);
        assert_eq!(held.len(), 5);
        assert!(!held.is_empty());
        let back: Vec<&[u8]> = held.iter().collect();
        let want: Vec<&[u8]> = refs.iter().map(|r| r.as_bytes()).collect();
        assert_eq!(back, want);
        // The bytes are field 1 of the generated message, and the smart client's.
        let strings: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
        let generated = GetOnlineFeaturesRequest {
            features: strings.clone(),
            ..Default::default()
        };
        assert_eq!(held.encoded(), generated.encode_to_vec().as_slice());
        assert_eq!(
            held.encoded(),
            &OutgoingLookup::encode_references(&strings)[..]
        );
        assert_eq!(format!("{held:?}"), format!("{:?}", refs.map(String::from)));
    }

    #[test]
    fn none_is_empty() {
        let none = FeatureRefs::default();
        assert!(none.is_empty());
        assert_eq!(none.iter().count(), 0);
        assert!(none.encoded().is_empty());
    }
}
