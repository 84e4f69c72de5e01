//! Strict mode's report: the message and detail of the "lease lost" error (SQLSTATE QC001).
//!
//! In strict mode an ack, nack or extend whose receipt no longer holds its lease fails instead of
//! returning false. The wrapper in sql/api.sql raises the error from this report, so a consumer
//! learns which receipts lost their lease and why that happens. A batch lists only the first
//! few receipts, so that a batch of a thousand stale receipts does not make a thousand-line error.

use std::collections::HashSet;
use std::fmt;

use crate::receipt::Receipt;

/// The message of a single receipt's failure, and of a failure nobody recorded.
pub const LOST_MESSAGE: &str = "receipt does not hold a lease";

/// Why a receipt stops holding its lease; ends every detail.
pub const LOST_DETAIL: &str = "A lease ends when its message is acknowledged or nacked, when another \
                               consumer leases the message after the visibility timeout expired, or \
                               when the message is deleted.";

/// How many receipts a batch's detail names before summing up the rest.
pub const LISTED_RECEIPTS: usize = 5;

/// What the failed call would have done, as the detail says it ("Nothing was nacked.").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Acknowledged,
    Nacked,
    Extended,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Acknowledged => "acknowledged",
            Verb::Nacked => "nacked",
            Verb::Extended => "extended",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error's message and detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLost {
    pub message: String,
    pub detail: String,
}

impl LeaseLost {
    /// A single-receipt call (`ack`, `nack`, `extend`) whose receipt did not hold its lease.
    pub fn single(receipt: Receipt, verb: Verb) -> LeaseLost {
        LeaseLost {
            message: LOST_MESSAGE.to_string(),
            detail: format!("Receipt {receipt}: nothing was {verb}. {LOST_DETAIL}"),
        }
    }

    /// A batch call: `receipts` as the call took them (distinct), `done` the (message id, token)
    /// pairs that held their lease. None when every receipt held one.
    pub fn batch(receipts: &[Receipt], done: &[(i64, i64)], verb: Verb) -> Option<LeaseLost> {
        // `done` is a subset of the distinct receipts, so equal counts mean all of them.
        if done.len() == receipts.len() {
            return None;
        }
        let done: HashSet<(i64, i64)> = done.iter().copied().collect();
        let lost: Vec<&Receipt> =
            receipts.iter().filter(|r| !done.contains(&(r.message_id, r.token as i64))).collect();
        let mut listed: Vec<String> = lost.iter().take(LISTED_RECEIPTS).map(|r| r.to_string()).collect();
        if lost.len() > LISTED_RECEIPTS {
            listed.push(format!("and {} more", lost.len() - LISTED_RECEIPTS));
        }
        Some(LeaseLost {
            message: format!("{} of {} receipts do not hold a lease", lost.len(), receipts.len()),
            detail: format!(
                "Nothing was {verb}. Receipts without a lease: {}. {LOST_DETAIL}",
                listed.join(", ")
            ),
        })
    }

    /// The report when none was recorded (the report function called out of turn).
    pub fn unrecorded() -> LeaseLost {
        LeaseLost { message: LOST_MESSAGE.to_string(), detail: LOST_DETAIL.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHY: &str = "A lease ends when its message is acknowledged or nacked, when another consumer leases \
                       the message after the visibility timeout expired, or when the message is deleted.";

    /// Receipts of messages 1..=n under lease token 7.
    fn receipts(n: i64) -> Vec<Receipt> {
        (1..=n).map(|id| Receipt::new(id, 7)).collect()
    }

    fn done(receipts: &[Receipt]) -> Vec<(i64, i64)> {
        receipts.iter().map(|r| (r.message_id, r.token as i64)).collect()
    }

    #[test]
    fn detail_is_one_line_with_single_spaces() {
        assert_eq!(LOST_DETAIL, WHY);
    }

    #[test]
    fn verbs() {
        assert_eq!(Verb::Acknowledged.to_string(), "acknowledged");
        assert_eq!(Verb::Nacked.to_string(), "nacked");
        assert_eq!(Verb::Extended.to_string(), "extended");
    }

    #[test]
    fn single_receipt() {
        let lost = LeaseLost::single(Receipt::new(42, 7), Verb::Acknowledged);
        assert_eq!(lost.message, "receipt does not hold a lease");
        assert_eq!(
            lost.detail,
            format!("Receipt 00000000-0000-8002-a800-000000000007: nothing was acknowledged. {WHY}")
        );
        let lost = LeaseLost::single(Receipt::new(42, 7), Verb::Extended);
        assert!(
            lost.detail.starts_with("Receipt 00000000-0000-8002-a800-000000000007: nothing was extended. ")
        );
    }

    #[test]
    fn a_batch_that_held_reports_nothing() {
        let all = receipts(3);
        assert_eq!(LeaseLost::batch(&all, &done(&all), Verb::Acknowledged), None);
        assert_eq!(LeaseLost::batch(&[], &[], Verb::Acknowledged), None);
    }

    #[test]
    fn one_lost() {
        let all = receipts(3);
        let lost = LeaseLost::batch(&all, &done(&[all[0], all[2]]), Verb::Nacked).expect("one lost");
        assert_eq!(lost.message, "1 of 3 receipts do not hold a lease");
        assert_eq!(
            lost.detail,
            format!(
                "Nothing was nacked. Receipts without a lease: 00000000-0000-8000-8800-000000000007. {WHY}"
            )
        );
    }

    #[test]
    fn five_lost_are_all_listed() {
        let all = receipts(6);
        let lost = LeaseLost::batch(&all, &done(&all[5..]), Verb::Acknowledged).expect("five lost");
        assert_eq!(lost.message, "5 of 6 receipts do not hold a lease");
        assert_eq!(
            lost.detail,
            format!(
                "Nothing was acknowledged. Receipts without a lease: 00000000-0000-8000-8400-000000000007, \
                 00000000-0000-8000-8800-000000000007, 00000000-0000-8000-8c00-000000000007, \
                 00000000-0000-8000-9000-000000000007, 00000000-0000-8000-9400-000000000007. {WHY}"
            )
        );
    }

    #[test]
    fn seven_lost_list_five_and_two_more() {
        let all = receipts(7);
        let lost = LeaseLost::batch(&all, &[], Verb::Nacked).expect("seven lost");
        assert_eq!(lost.message, "7 of 7 receipts do not hold a lease");
        assert_eq!(
            lost.detail,
            format!(
                "Nothing was nacked. Receipts without a lease: 00000000-0000-8000-8400-000000000007, \
                 00000000-0000-8000-8800-000000000007, 00000000-0000-8000-8c00-000000000007, \
                 00000000-0000-8000-9000-000000000007, 00000000-0000-8000-9400-000000000007, \
                 and 2 more. {WHY}"
            )
        );
    }

    #[test]
    fn lost_are_listed_in_call_order_and_matched_by_token() {
        // An old and a new receipt of message 2: only the new one held.
        let all = [Receipt::new(3, 7), Receipt::new(2, 7), Receipt::new(1, 7), Receipt::new(2, 8)];
        let lost = LeaseLost::batch(&all, &[(3, 7), (2, 8)], Verb::Acknowledged).expect("lost");
        assert_eq!(lost.message, "2 of 4 receipts do not hold a lease");
        assert!(lost.detail.starts_with(
            "Nothing was acknowledged. Receipts without a lease: 00000000-0000-8000-8800-000000000007, \
             00000000-0000-8000-8400-000000000007. "
        ));
    }

    #[test]
    fn unrecorded_report() {
        assert_eq!(LeaseLost::unrecorded(), LeaseLost { message: LOST_MESSAGE.into(), detail: WHY.into() });
    }
}
