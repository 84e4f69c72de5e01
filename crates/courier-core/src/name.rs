//! The queue naming rule.
//!
//! Queue names are data (a column in `courier.queue`), never spliced into SQL, so the rule is not
//! what keeps us safe from injection. It exists so names stay portable: usable as a LISTEN/NOTIFY
//! channel suffix, in metrics labels, in URLs and in shell scripts without quoting.

use crate::error::{CourierError, ErrorKind};
use crate::limits::MAX_QUEUE_NAME_BYTES;

/// Checks a queue name: 1 to 63 bytes of ASCII letters, digits and `_ - . : /`, starting with a
/// letter, digit or underscore. Names are case-sensitive.
pub fn validate_queue_name(name: &str, argument: &str) -> Result<(), CourierError> {
    if name.is_empty() {
        return Err(CourierError::new(ErrorKind::InvalidName, format!("{argument} must not be empty")));
    }
    if name.len() > MAX_QUEUE_NAME_BYTES {
        return Err(CourierError::new(
            ErrorKind::NameTooLong,
            format!("{argument} is too long ({} bytes, the maximum is {MAX_QUEUE_NAME_BYTES})", name.len()),
        ));
    }
    if let Some((pos, ch)) = name.char_indices().find(|&(_, c)| !is_name_char(c)) {
        return Err(CourierError::new(
            ErrorKind::InvalidName,
            format!("{argument} contains an invalid character {} at position {}", describe(ch), pos + 1),
        )
        .with_hint("Queue names may contain only ASCII letters, digits, and the characters _ - . : /"));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Err(CourierError::new(
            ErrorKind::InvalidName,
            format!("{argument} must start with a letter, a digit or an underscore"),
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')
}

fn describe(c: char) -> String {
    if c.is_ascii_graphic() { format!("\"{c}\"") } else { format!("U+{:04X}", c as u32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str) -> Result<(), ErrorKind> {
        validate_queue_name(name, "queue").map_err(|e| e.kind)
    }

    #[test]
    fn accepts_documented_characters() {
        for ok in ["a", "jobs", "Billing/Invoices", "email:high", "v1.events", "_tmp", "0day", "a-b_c.d:e/f"]
        {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(check(&"x".repeat(63)), Ok(()));
    }

    #[test]
    fn rejects_empty_and_long() {
        assert_eq!(check(""), Err(ErrorKind::InvalidName));
        assert_eq!(check(&"x".repeat(64)), Err(ErrorKind::NameTooLong));
        // 22 four-byte characters are 88 bytes: the byte length is what counts.
        assert_eq!(check(&"😀".repeat(22)), Err(ErrorKind::NameTooLong));
    }

    #[test]
    fn rejects_injection_material_and_unicode() {
        for bad in [
            "a'b",
            "a;b",
            "a b",
            "a\"b",
            "a$$b",
            "a--b;",
            "a\0b",
            "caf\u{e9}",
            "a\nb",
            "-lead",
            ".dot",
            "/root",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn message_names_argument_and_character() {
        let e = validate_queue_name("a;b", "dead_letter_queue").unwrap_err();
        assert_eq!(e.message, "dead_letter_queue contains an invalid character \";\" at position 2");
        let e = validate_queue_name("a\u{e9}", "queue").unwrap_err();
        assert_eq!(e.message, "queue contains an invalid character U+00E9 at position 2");
    }
}

/// The object id courier locks to serialise `enqueue` against `drop_queue` for one queue name:
/// 32-bit FNV-1a of the name. Locking by name (not by queue id) lets enqueue lock *before* it
/// looks the queue up, so the lookup that follows always sees a drop that committed first. Two
/// names that collide only make their drops wait for each other's enqueues.
pub fn lock_key(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod lock_key_tests {
    use super::lock_key;

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(lock_key(""), 0x811c_9dc5);
        assert_eq!(lock_key("a"), 0xe40c_292c);
        assert_eq!(lock_key("foobar"), 0xbf9c_f968);
        assert_ne!(lock_key("jobs"), lock_key("jobz"));
    }
}
