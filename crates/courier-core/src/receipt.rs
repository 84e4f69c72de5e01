//! Receipts: the one value a consumer needs to ack, nack or extend a lease.
//!
//! A receipt is an RFC 9562 version-8 UUID, so every client library can carry it. Its 122 free
//! bits hold the message id (64 bits) and a random lease token (58 bits) chosen when the lease was
//! granted. The message row stores the token of its current lease; an ack matches both, so a
//! receipt from an earlier lease of the same message can never act on a later one.
//!
//! Layout (bit 0 is the most significant bit of byte 0):
//!
//! ```text
//!  bits   0..48  message id >> 16
//!  bits  48..52  version (0b1000)
//!  bits  52..64  (message id >> 4) & 0xfff
//!  bits  64..66  variant (0b10)
//!  bits  66..70  message id & 0xf
//!  bits  70..128 lease token (58 bits)
//! ```

/// Mask of the bits a lease token may use.
pub const TOKEN_MASK: u64 = (1 << 58) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: i64,
    pub token: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptError {
    /// Version or variant bits are not those of a courier receipt.
    NotACourierReceipt,
    /// The bits decode to a message id no message can have (not positive).
    BadMessageId,
}

impl Receipt {
    /// Builds a receipt; the token is truncated to its 58 usable bits.
    pub fn new(message_id: i64, token: u64) -> Self {
        Receipt { message_id, token: token & TOKEN_MASK }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let id = self.message_id as u64;
        let hi: u64 = ((id >> 16) << 16) | (0x8 << 12) | ((id >> 4) & 0xfff);
        let lo: u64 = (0b10 << 62) | ((id & 0xf) << 58) | (self.token & TOKEN_MASK);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&hi.to_be_bytes());
        out[8..].copy_from_slice(&lo.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; 16]) -> Result<Self, ReceiptError> {
        let hi = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let lo = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
        if (hi >> 12) & 0xf != 0x8 || lo >> 62 != 0b10 {
            return Err(ReceiptError::NotACourierReceipt);
        }
        let id = ((hi >> 16) << 16) | ((hi & 0xfff) << 4) | ((lo >> 58) & 0xf);
        let message_id = id as i64;
        if message_id <= 0 {
            return Err(ReceiptError::BadMessageId);
        }
        Ok(Receipt { message_id, token: lo & TOKEN_MASK })
    }
}

/// The UUID's text form as PostgreSQL prints it (`uuid_out`): lowercase hex in groups of
/// 8-4-4-4-12, byte for byte what the extension's `pgrx::Uuid` Display gives, so messages that
/// name a receipt show the value the client sent.
impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.to_bytes().iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Groups receipts by lease token, in order of first appearance: (token, message ids).
///
/// One lease call gives all its messages the same token, so a batch ack usually has one group,
/// and a statement per group matches `lease_token = token AND id = ANY(ids)`: no per-row search
/// through the batch. Receipts must be distinct; then no id occurs twice within a group.
pub fn by_token(receipts: &[Receipt]) -> Vec<(u64, Vec<i64>)> {
    let mut out: Vec<(u64, Vec<i64>)> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for r in receipts {
        let i = *index.entry(r.token).or_insert_with(|| {
            out.push((r.token, Vec::new()));
            out.len() - 1
        });
        out[i].1.push(r.message_id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        for id in [1i64, 2, 15, 16, 0xfff, 0x1_0000, 123_456_789, i64::MAX] {
            for token in [0u64, 1, TOKEN_MASK, 0x02aa_aaaa_aaaa_aaaa] {
                let r = Receipt::new(id, token);
                assert_eq!(Receipt::from_bytes(&r.to_bytes()), Ok(r), "id {id} token {token}");
            }
        }
    }

    #[test]
    fn is_a_version_8_uuid() {
        let b = Receipt::new(42, 7).to_bytes();
        assert_eq!(b[6] >> 4, 8, "version nibble");
        assert_eq!(b[8] >> 6, 0b10, "RFC 9562 variant");
    }

    #[test]
    fn token_is_truncated_to_58_bits() {
        assert_eq!(Receipt::new(5, u64::MAX).token, TOKEN_MASK);
    }

    #[test]
    fn different_token_different_receipt() {
        assert_ne!(Receipt::new(9, 1).to_bytes(), Receipt::new(9, 2).to_bytes());
        assert_ne!(Receipt::new(9, 1).to_bytes(), Receipt::new(10, 1).to_bytes());
    }

    #[test]
    fn rejects_foreign_uuids() {
        // A random version-4 UUID.
        let v4 = [0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0, 0];
        assert_eq!(Receipt::from_bytes(&v4), Err(ReceiptError::NotACourierReceipt));
        assert_eq!(Receipt::from_bytes(&[0u8; 16]), Err(ReceiptError::NotACourierReceipt));
        // Version 8 but the wrong variant.
        let mut b = Receipt::new(3, 3).to_bytes();
        b[8] &= 0x3f;
        assert_eq!(Receipt::from_bytes(&b), Err(ReceiptError::NotACourierReceipt));
    }

    #[test]
    fn rejects_non_positive_ids() {
        let zero = Receipt { message_id: 0, token: 1 }.to_bytes();
        assert_eq!(Receipt::from_bytes(&zero), Err(ReceiptError::BadMessageId));
        let negative = Receipt { message_id: -5, token: 1 }.to_bytes();
        assert_eq!(Receipt::from_bytes(&negative), Err(ReceiptError::BadMessageId));
    }

    #[test]
    fn text_form_is_lowercase_8_4_4_4_12() {
        assert_eq!(Receipt::new(42, 7).to_string(), "00000000-0000-8002-a800-000000000007");
        assert_eq!(Receipt::new(i64::MAX, TOKEN_MASK).to_string(), "7fffffff-ffff-8fff-bfff-ffffffffffff");
        assert_eq!(
            Receipt::new(0x0123_4567_89ab_cdef, 0x0155_5555_5555_5555).to_string(),
            "01234567-89ab-8cde-bd55-555555555555"
        );
    }

    /// pgrx 0.18.1's `Uuid` text form (src/datum/uuid.rs: `Display` writes `{self:-x}`, and
    /// `LowerHex` with the `-` flag hyphenates), copied as the reference to match.
    struct PgrxUuid([u8; 16]);

    impl std::fmt::Display for PgrxUuid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:-x}")
        }
    }

    impl std::fmt::LowerHex for PgrxUuid {
        fn fmt(&self, f: &mut std::fmt::Formatter) -> Result<(), std::fmt::Error> {
            use std::fmt::Write;
            let hyphenated = f.sign_minus();
            for (i, b) in self.0.iter().enumerate() {
                if hyphenated && (i == 4 || i == 6 || i == 8 || i == 10) {
                    f.write_char('-')?;
                }
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }

    #[test]
    fn text_form_matches_pgrx_uuid() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = Receipt::new((x >> 1) as i64 | 1, x.rotate_left(29));
            assert_eq!(r.to_string(), PgrxUuid(r.to_bytes()).to_string());
        }
        let r = Receipt::new(1, 0);
        assert_eq!(format!("{r:>50}"), format!("{:>50}", PgrxUuid(r.to_bytes())), "flags ignored alike");
    }

    #[test]
    fn groups_by_token_in_order() {
        let r = |id, t| Receipt::new(id, t);
        assert!(by_token(&[]).is_empty());
        assert_eq!(by_token(&[r(1, 7), r(2, 7), r(3, 7)]), vec![(7, vec![1, 2, 3])]);
        // An old and a new lease of message 1 land in different groups.
        assert_eq!(by_token(&[r(1, 9), r(2, 7), r(1, 7), r(3, 9)]), vec![(9, vec![1, 3]), (7, vec![2, 1])]);
    }
}
