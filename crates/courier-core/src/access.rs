//! Queue privileges: what a role may do to a queue.
//!
//! A queue belongs to the role that created it. The owner, members of the owning role and
//! superusers may do anything to it, including grant privileges on it. Other roles need a grant:
//!
//! - `enqueue`: put messages in (enqueue, enqueue_batch, enqueue_unique);
//! - `consume`: lease, and ack, nack or extend what they leased;
//! - `manage`: alter, purge, redrive, reset statistics.
//!
//! Dropping a queue and granting or revoking privileges on it stay with the owner.

use crate::error::{CourierError, ErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privilege {
    Enqueue,
    Consume,
    Manage,
}

pub const ALL: [Privilege; 3] = [Privilege::Enqueue, Privilege::Consume, Privilege::Manage];

impl Privilege {
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Enqueue => "enqueue",
            Privilege::Consume => "consume",
            Privilege::Manage => "manage",
        }
    }

    pub fn from_stored(s: &str) -> Option<Privilege> {
        ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// What the operation is called in a permission error: "permission denied to {verb} queue".
    fn verb(self) -> &'static str {
        match self {
            Privilege::Enqueue => "enqueue to",
            Privilege::Consume => "consume from",
            Privilege::Manage => "manage",
        }
    }
}

/// Parses a `privilege` argument: one privilege name or `all`, case-insensitive.
pub fn parse_privileges(value: &str, argument: &str) -> Result<Vec<Privilege>, CourierError> {
    let v = value.trim().to_ascii_lowercase();
    if v == "all" {
        return Ok(ALL.to_vec());
    }
    Privilege::from_stored(&v).map(|p| vec![p]).ok_or_else(|| {
        CourierError::invalid(format!(
            "{argument} must be one of enqueue, consume, manage or all, not \"{}\"",
            value.chars().take(64).collect::<String>()
        ))
    })
}

pub fn denied(privilege: Privilege, queue: &str) -> CourierError {
    CourierError::new(
        ErrorKind::InsufficientPrivilege,
        format!("permission denied to {} queue \"{queue}\"", privilege.verb()),
    )
    .with_hint(format!(
        "The queue's owner can run courier.grant('{queue}', '{}', '<role>').",
        privilege.as_str()
    ))
}

pub fn not_owner(queue: &str) -> CourierError {
    CourierError::new(ErrorKind::InsufficientPrivilege, format!("must be owner of queue \"{queue}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_all() {
        assert_eq!(parse_privileges("enqueue", "p").unwrap(), vec![Privilege::Enqueue]);
        assert_eq!(parse_privileges(" Consume ", "p").unwrap(), vec![Privilege::Consume]);
        assert_eq!(parse_privileges("ALL", "p").unwrap(), ALL.to_vec());
        let e = parse_privileges("select", "privilege").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameter);
        assert!(e.message.starts_with("privilege must be one of"), "{}", e.message);
    }

    #[test]
    fn stored_names_round_trip() {
        for p in ALL {
            assert_eq!(Privilege::from_stored(p.as_str()), Some(p));
        }
        assert_eq!(Privilege::from_stored("all"), None);
    }

    #[test]
    fn errors_name_the_operation_and_queue() {
        let e = denied(Privilege::Consume, "jobs");
        assert_eq!(e.kind, ErrorKind::InsufficientPrivilege);
        assert_eq!(e.message, "permission denied to consume from queue \"jobs\"");
        assert_eq!(not_owner("jobs").message, "must be owner of queue \"jobs\"");
    }

    #[test]
    fn long_bad_values_are_cut_in_the_message() {
        let e = parse_privileges(&"x".repeat(10_000), "privilege").unwrap_err();
        assert!(e.message.len() < 200);
    }
}
