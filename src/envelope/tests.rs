//! Unit tests of `crate::envelope`.

use super::*;

fn ctx() -> EncryptionContext {
    [("purpose".to_string(), "app-data".to_string())].into()
}

fn slot(seq: u64) -> Slot {
    Slot {
        sequence: seq,
        wrapped_at: 1_700_000_000,
        key_version: 2,
        key_arn: "arn:aws:kms:us-east-1:111122223333:key/abc".into(),
        wrapped_key: vec![7u8; 200],
        wrapping: SlotWrapping::Kms,
    }
}

#[test]
fn header_round_trips() {
    let h = Header::new(4096, ctx()).unwrap();
    let back = Header::parse(h.as_bytes()).unwrap();
    assert_eq!(back, h);
    assert_eq!(back.kms_context().len(), 2);
    assert_eq!(h.len(), 80 + 2 + 2 + 7 + 2 + 8);
}

#[test]
fn header_rejects_each_corruption() {
    let h = Header::new(4096, ctx()).unwrap();
    let mut b = h.as_bytes().to_vec();
    b[0] ^= 1;
    assert!(matches!(Header::parse(&b), Err(EnvelopeError::NotEnvelope)));
    let mut b = h.as_bytes().to_vec();
    b[9] = 2;
    assert!(matches!(
        Header::parse(&b),
        Err(EnvelopeError::UnsupportedVersion(2))
    ));
    let mut b = h.as_bytes().to_vec();
    b[20] ^= 1;
    assert!(matches!(
        Header::parse(&b),
        Err(EnvelopeError::CorruptHeader("header checksum mismatch"))
    ));
    assert!(matches!(
        Header::parse(&h.as_bytes()[..60]),
        Err(EnvelopeError::TruncatedHeader)
    ));
}

#[test]
fn reserved_context_keys_are_refused() {
    let c: EncryptionContext = [("rewrap:file-id".to_string(), "x".to_string())].into();
    assert!(matches!(
        Header::new(4096, c),
        Err(EnvelopeError::InvalidContext(_))
    ));
}

#[test]
fn slot_round_trips_and_detects_torn_writes() {
    let s = slot(3);
    let enc = s.encode().unwrap();
    assert_eq!(Slot::decode(&enc), SlotState::Valid(s));
    let mut torn = enc;
    torn[600..].fill(0);
    assert_eq!(Slot::decode(&torn), SlotState::Corrupt);
    assert_eq!(Slot::decode(&EMPTY_SLOT), SlotState::Empty);
}

#[test]
fn active_slot_is_highest_valid_sequence() {
    let a = SlotState::Valid(slot(1));
    let b = SlotState::Valid(slot(2));
    assert_eq!(Slots([a.clone(), b.clone()]).active().unwrap().0, 1);
    assert_eq!(
        Slots([a.clone(), SlotState::Corrupt]).active().unwrap().0,
        0
    );
    assert_eq!(Slots([SlotState::Empty, b]).active().unwrap().0, 1);
    assert!(matches!(
        Slots([SlotState::Corrupt, SlotState::Empty]).active(),
        Err(EnvelopeError::CorruptHeader("both key slots invalid"))
    ));
    assert!(matches!(
        Slots([a.clone(), a]).active(),
        Err(EnvelopeError::CorruptHeader(_))
    ));
}

#[test]
fn oversized_slot_is_refused() {
    let mut s = slot(1);
    s.wrapped_key = vec![1u8; 1000];
    assert!(matches!(s.encode(), Err(EnvelopeError::SlotOverflow(_))));
}
