use prost::Message as _;

use super::*;
use crate::v1::{ResponseEncoding, TopicOffset, entity_key};

fn full_request() -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: vec![
            "user_stats:clicks".into(),
            "user_stats:*".into(),
            "vues_é:größe".into(),
            "user_stats@3:clicks".into(),
        ],
        feature_service: String::new(),
        entity_keys: vec![
            EntityKey {
                kind: Some(entity_key::Kind::StringValue("u1".into())),
            },
            EntityKey {
                kind: Some(entity_key::Kind::Int64Value(-7)),
            },
        ],
        min_watermarks: vec![ShardWatermark {
            shard: 3,
            offsets: vec![TopicOffset {
                topic: "clicks".into(),
                next_offset: 42,
            }],
        }],
        watermark_wait_ms: 25,
        encoding: ResponseEncoding::Cells as i32,
        include_event_times: true,
        as_of: Some(AsOf {
            time_micros: 1_700_000_000_000_000,
            key_times_micros: vec![1, 2],
            exclude_late_arrivals: true,
        }),
    }
}

#[test]
fn the_twin_reads_and_writes_exactly_the_generated_message() {
    let original = full_request();
    let wire = original.encode_to_vec();
    let twin = LookupRequest::decode(wire.as_slice()).expect("twin decodes");
    let names: Vec<&str> = (0..twin.features.len())
        .map(|i| twin.feature(i).expect("utf-8"))
        .collect();
    assert_eq!(names, original.features);
    assert_eq!(twin.entity_keys, original.entity_keys);
    assert_eq!(twin.min_watermarks, original.min_watermarks);
    assert_eq!(twin.as_of, original.as_of);
    assert_eq!(twin.watermark_wait_ms, 25);
    assert_eq!(twin.encoding, ResponseEncoding::Cells as i32);
    assert!(twin.include_event_times);
    // Same bytes back: nothing is lost or reordered.
    assert_eq!(twin.encode_to_vec(), wire);
    assert_eq!(LookupRequest::from(original.clone()), twin);
    // A feature service instead of a list.
    let svc = GetOnlineFeaturesRequest {
        features: vec![],
        feature_service: "ranking".into(),
        ..original
    };
    let twin = LookupRequest::decode(svc.encode_to_vec().as_slice()).expect("twin decodes");
    assert!(twin.features.is_empty());
    assert_eq!(twin.feature_service, "ranking");
}

#[test]
fn a_reference_that_is_not_utf8_is_named_when_read_as_text() {
    let mut wire = GetOnlineFeaturesRequest {
        features: vec!["v:a".into(), "v:b".into()],
        ..Default::default()
    }
    .encode_to_vec();
    // The second reference's "b" becomes 0xff: the generated message refuses the whole
    // request; the twin keeps it and refuses that reference when it is read as text.
    let at = wire.iter().rposition(|b| *b == b'b').expect("b");
    wire[at] = 0xff;
    assert!(GetOnlineFeaturesRequest::decode(wire.as_slice()).is_err());
    let twin = LookupRequest::decode(wire.as_slice()).expect("twin decodes");
    assert_eq!(twin.feature(0), Ok("v:a"));
    let err = twin.feature(1).expect_err("not utf-8");
    assert_eq!(err, NotUtf8 { index: 1, len: 3 });
    assert!(err.to_string().contains("feature reference 1"), "{err}");
}

#[test]
fn the_twin_has_every_field_of_the_proto_message() {
    let set = prost_types::FileDescriptorSet::decode(crate::v1::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let message = set
        .file
        .iter()
        .filter(|f| f.package() == "quiver.v1")
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == "GetOnlineFeaturesRequest")
        .expect("GetOnlineFeaturesRequest in the descriptor set");
    let fields: Vec<(i32, &str)> = message
        .field
        .iter()
        .map(|f| (f.number(), f.name()))
        .collect();
    // The twin's fields, in tag order. A field added to the .proto must be added to
    // `LookupRequest` (and here), or the node would silently drop it.
    assert_eq!(
        fields,
        [
            (1, "features"),
            (2, "feature_service"),
            (3, "entity_keys"),
            (4, "min_watermarks"),
            (5, "watermark_wait_ms"),
            (6, "encoding"),
            (7, "include_event_times"),
            (8, "as_of"),
        ]
    );
}

#[test]
fn an_outgoing_lookup_encodes_as_the_generated_request() {
    let cases = [
        full_request(),
        GetOnlineFeaturesRequest::default(),
        GetOnlineFeaturesRequest {
            features: vec![String::new(), "v:".into(), "x".repeat(300)],
            ..Default::default()
        },
        GetOnlineFeaturesRequest {
            features: vec![],
            feature_service: "ranking".into(),
            ..full_request()
        },
        // A key without a kind is an empty message, still written.
        GetOnlineFeaturesRequest {
            feature_service: "s".repeat(200),
            entity_keys: vec![
                EntityKey::default(),
                EntityKey {
                    kind: Some(entity_key::Kind::StringValue("é".repeat(100))),
                },
            ],
            ..Default::default()
        },
    ];
    for want in cases {
        let out = OutgoingLookup {
            head: OutgoingLookup::encode_head(&want.features, &want.feature_service),
            keys: OutgoingLookup::encode_keys(want.entity_keys.iter()),
            rest: GetOnlineFeaturesRequest {
                features: Vec::new(),
                feature_service: String::new(),
                entity_keys: Vec::new(),
                ..want.clone()
            },
        };
        let bytes = out.encode_to_vec();
        assert_eq!(bytes, want.encode_to_vec());
        assert_eq!(out.encoded_len(), bytes.len());
        // What the node decodes is what was meant.
        assert_eq!(
            GetOnlineFeaturesRequest::decode(bytes.as_slice()).expect("decodes"),
            want
        );
    }
}

/// A message with field 1 entries between other fields (any protobuf writer may do
/// that), a non-shortest length varint and an unknown field: the twin reads what the
/// generated message reads, and its references in canonical form.
#[test]
fn references_between_other_fields_and_odd_lengths_decode_as_generated() {
    let mut wire = Vec::new();
    prost::encoding::string::encode(1, &"v:a".to_string(), &mut wire);
    prost::encoding::string::encode(2, &"svc".to_string(), &mut wire);
    // Field 1, "v:b" with its length 3 written in two bytes (0x83 0x00).
    wire.extend_from_slice(&[0x0a, 0x83, 0x00, b'v', b':', b'b']);
    // Unknown field 99, a varint.
    prost::encoding::uint64::encode(99, &7, &mut wire);
    prost::encoding::uint32::encode(5, &9, &mut wire);
    prost::encoding::string::encode(1, &"w:*".to_string(), &mut wire);
    let generated = GetOnlineFeaturesRequest::decode(wire.as_slice()).expect("generated");
    let twin = LookupRequest::decode(wire.as_slice()).expect("twin");
    assert_eq!(twin, LookupRequest::from(generated.clone()));
    assert_eq!(generated.features, ["v:a", "v:b", "w:*"]);
    assert_eq!(
        twin.features.encoded(),
        &OutgoingLookup::encode_references(&generated.features)[..]
    );
    assert_eq!(twin.encode_to_vec(), generated.encode_to_vec());
    assert_eq!(twin.encoded_len(), generated.encoded_len());
}

/// A reference whose length runs past the end, or a field 1 that is not
/// length-delimited, is refused as the generated message refuses it.
#[test]
fn a_truncated_or_mistyped_reference_is_refused() {
    let mut wire = GetOnlineFeaturesRequest {
        features: vec!["v:a".into(), "v:bcd".into()],
        ..Default::default()
    }
    .encode_to_vec();
    wire.truncate(wire.len() - 2);
    assert!(GetOnlineFeaturesRequest::decode(wire.as_slice()).is_err());
    let err = LookupRequest::decode(wire.as_slice()).expect_err("truncated");
    assert!(err.to_string().contains("features"), "{err}");
    // Field 1 as a varint.
    let wire = [0x08, 0x01];
    assert!(GetOnlineFeaturesRequest::decode(&wire[..]).is_err());
    assert!(LookupRequest::decode(&wire[..]).is_err());
}

/// Random requests (seeded): the twin decodes the generated message's bytes to the same
/// request, encodes them back to the same bytes, and a request of the same references
/// holds the same `FeatureRefs` bytes however they were built.
#[test]
fn random_requests_decode_and_encode_as_the_generated_message() {
    let mut rng = crate::test_rng::Rng(0x0010_00c0);
    for _ in 0..500 {
        let features: Vec<String> = (0..rng.below(60))
            .map(|_| {
                let long = rng.below(10) == 0;
                let len = rng.below(if long { 300 } else { 20 });
                (0..len)
                    .map(|_| char::from(b'a' + rng.below(26) as u8))
                    .collect()
            })
            .collect();
        let mut want = full_request();
        want.features = features;
        if rng.below(3) == 0 {
            want.as_of = None;
        }
        want.entity_keys.truncate(rng.below(3));
        let wire = want.encode_to_vec();
        let twin = LookupRequest::decode(wire.as_slice()).expect("twin decodes");
        assert_eq!(twin, LookupRequest::from(want.clone()));
        assert_eq!(twin.features.len(), want.features.len());
        assert_eq!(twin.encode_to_vec(), wire);
        assert_eq!(twin.encoded_len(), wire.len());
        let texts: Vec<&[u8]> = twin.features.iter().collect();
        let wanted: Vec<&[u8]> = want.features.iter().map(|f| f.as_bytes()).collect();
        assert_eq!(texts, wanted);
    }
}

/// The references decode the same however the message is split into chunks (a run of
/// references is read from one chunk; a reference may straddle two).
#[test]
fn references_decode_the_same_across_chunk_boundaries() {
    use bytes::Buf as _;
    let want = full_request();
    let wire = want.encode_to_vec();
    let whole = LookupRequest::decode(wire.as_slice()).expect("whole");
    assert_eq!(whole, LookupRequest::from(want));
    for cut in 0..=wire.len() {
        let split = (&wire[..cut]).chain(&wire[cut..]);
        let twin = LookupRequest::decode(split).expect("split");
        assert_eq!(twin, whole, "cut at {cut}");
    }
}
