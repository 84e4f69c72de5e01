//! Server-log event lines: which events the `courier.log_events` setting selects, and how one
//! line is written.
//!
//! A line is `courier: event=<name>` followed by `key=value` fields (logfmt). A value that is
//! empty or holds anything but printable ASCII other than `"`, `=` and `\` is written as a JSON
//! string, so a line stays one line whatever an error message or payload contains, and a parser
//! needs nothing but `key=value` splitting and a JSON string decoder.

use std::fmt::Write;

/// What an operator can ask to see in the server log.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    /// A message moved to its queue's dead-letter queue, or parked dead in its own queue.
    DeadLetter,
    /// Dead letters put back to work by `redrive`.
    Redrive,
    /// Messages deleted wholesale: `purge_queue`, and `drop_queue` with its messages.
    Purge,
    /// A lease that ran out, and the message leased again by another lease.
    LeaseExpired,
}

impl Event {
    pub const ALL: [Event; 4] = [Event::DeadLetter, Event::Redrive, Event::Purge, Event::LeaseExpired];

    /// Its name in `courier.log_events`.
    pub fn name(self) -> &'static str {
        match self {
            Event::DeadLetter => "dead_letter",
            Event::Redrive => "redrive",
            Event::Purge => "purge",
            Event::LeaseExpired => "lease_expired",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The setting's default: the events that mean something went wrong or an operator acted, one
/// line each. Lease expiries are left out: under a systematic timeout (workers that always take
/// longer than the visibility timeout) they come once per message and delivery, and
/// `courier_queue_expired_total` already counts them.
/// A C string, since it is the setting's boot value.
pub const DEFAULT_LOG_EVENTS: &std::ffi::CStr = c"dead_letter, redrive, purge";

/// The word that adds each dead letter's payload to its line.
const PAYLOADS: &str = "payloads";

/// At most this much of a payload goes into a line (cut at a character boundary, and the line
/// then says `payload_truncated=true`): enough to recognise a poison message, bounded like the
/// error text courier keeps.
pub const MAX_LOGGED_PAYLOAD_BYTES: usize = 8192;

/// A parsed `courier.log_events`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct LogEvents {
    events: u8,
    payloads: bool,
}

impl LogEvents {
    /// Parses a comma-separated list of event names, `all` (every event) or `none` (also the
    /// empty list), plus `payloads` (with dead_letter). Case and spaces around names do not
    /// matter. The error says what is wrong, for the setting's errdetail.
    pub fn parse(list: &str) -> Result<LogEvents, String> {
        let mut out = LogEvents::default();
        let mut none = false;
        let mut words = 0;
        for word in list.split(',') {
            let word = word.trim().to_ascii_lowercase();
            if word.is_empty() {
                continue;
            }
            words += 1;
            match word.as_str() {
                "none" => none = true,
                "all" => out.events = Event::ALL.iter().fold(0, |b, e| b | e.bit()),
                PAYLOADS => out.payloads = true,
                w => match Event::ALL.iter().find(|e| e.name() == w) {
                    Some(e) => out.events |= e.bit(),
                    None => {
                        return Err(format!(
                            "unrecognized event \"{w}\"; the events are dead_letter, redrive, purge, \
                             lease_expired, or all or none, and payloads (with dead_letter)"
                        ));
                    }
                },
            }
        }
        if none && words > 1 {
            return Err("\"none\" cannot be combined with other events".to_string());
        }
        if out.payloads && !out.logs(Event::DeadLetter) {
            return Err("\"payloads\" applies to dead_letter lines; list dead_letter too".to_string());
        }
        Ok(out)
    }

    pub fn logs(self, event: Event) -> bool {
        self.events & event.bit() != 0
    }

    /// Whether dead-letter lines carry the message's payload.
    pub fn payloads(self) -> bool {
        self.payloads
    }
}

/// One event line, built field by field.
pub struct Line(String);

impl Line {
    /// `event` is the line's event name (an [`Event`]'s name, or a more specific one such as
    /// `drop_queue` under [`Event::Purge`]).
    pub fn new(event: &str) -> Line {
        let mut line = String::from("courier: event=");
        push_value(&mut line, event);
        Line(line)
    }

    /// Adds `key=value`, quoting the value when it needs it.
    pub fn field(mut self, key: &str, value: impl std::fmt::Display) -> Line {
        let value = value.to_string();
        self.0.push(' ');
        self.0.push_str(key);
        self.0.push('=');
        push_value(&mut self.0, &value);
        self
    }

    /// Adds the field if there is a value.
    pub fn optional(self, key: &str, value: Option<impl std::fmt::Display>) -> Line {
        match value {
            Some(v) => self.field(key, v),
            None => self,
        }
    }

    /// Adds a payload (its JSON text), cut to [`MAX_LOGGED_PAYLOAD_BYTES`].
    pub fn payload(self, text: &str) -> Line {
        let cut = truncate(text, MAX_LOGGED_PAYLOAD_BYTES);
        let line = self.field("payload", cut);
        if cut.len() < text.len() { line.field("payload_truncated", "true") } else { line }
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Whether a value can stand unquoted: non-empty printable ASCII without `"`, `=` or `\`.
fn is_bare(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'))
}

fn push_value(out: &mut String, value: &str) {
    if is_bare(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Other control characters, and the Unicode line and paragraph separators some log
            // viewers break lines at.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The longest prefix of `text` of at most `max` bytes that ends at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses_to_three_events_without_payloads() {
        let d = LogEvents::parse(DEFAULT_LOG_EVENTS.to_str().unwrap()).unwrap();
        assert!(d.logs(Event::DeadLetter) && d.logs(Event::Redrive) && d.logs(Event::Purge));
        assert!(!d.logs(Event::LeaseExpired));
        assert!(!d.payloads());
    }

    #[test]
    fn parses_lists_all_and_none() {
        let all = LogEvents::parse(" ALL ").unwrap();
        assert!(Event::ALL.iter().all(|e| all.logs(*e)));
        assert!(!all.payloads());
        for nothing in ["", "none", " , ", "None"] {
            let n = LogEvents::parse(nothing).unwrap();
            assert!(Event::ALL.iter().all(|e| !n.logs(*e)), "{nothing:?}");
        }
        let two = LogEvents::parse("lease_expired,purge").unwrap();
        assert!(two.logs(Event::LeaseExpired) && two.logs(Event::Purge));
        assert!(!two.logs(Event::DeadLetter) && !two.logs(Event::Redrive));
        assert!(LogEvents::parse("dead_letter, payloads").unwrap().payloads());
        assert!(LogEvents::parse("all, payloads").unwrap().payloads());
    }

    #[test]
    fn rejects_unknown_words_and_contradictions() {
        let e = LogEvents::parse("dead_letter, dead_letters").unwrap_err();
        assert!(e.contains("\"dead_letters\""), "{e}");
        assert!(LogEvents::parse("none, purge").unwrap_err().contains("none"));
        assert!(LogEvents::parse("payloads").unwrap_err().contains("dead_letter"));
        assert!(LogEvents::parse("redrive payloads").is_err());
    }

    #[test]
    fn bare_values_stay_bare_and_others_are_json_strings() {
        let line = Line::new("dead_letter")
            .field("queue", "billing/invoices.v2")
            .field("id", 42)
            .field("error", "SMTP 550 \"no such user\"\nretry=no \\ bye")
            .field("empty", "")
            .optional("absent", None::<&str>)
            .field("unicode", "ünïcode\u{2028}\u{7}")
            .finish();
        assert_eq!(
            line,
            "courier: event=dead_letter queue=billing/invoices.v2 id=42 \
             error=\"SMTP 550 \\\"no such user\\\"\\nretry=no \\\\ bye\" empty=\"\" \
             unicode=\"ünïcode\\u2028\\u0007\""
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn payloads_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_LOGGED_PAYLOAD_BYTES);
        let line = Line::new("dead_letter").payload(&long).finish();
        assert!(line.ends_with(" payload_truncated=true"));
        let quoted = line.split(" payload=").nth(1).unwrap().split(" payload_truncated").next().unwrap();
        assert_eq!(quoted.len(), MAX_LOGGED_PAYLOAD_BYTES + 2);
        let short = Line::new("dead_letter").payload("{\"n\": 1}").finish();
        assert_eq!(short, "courier: event=dead_letter payload=\"{\\\"n\\\": 1}\"");
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("é", 1), "");
    }
}
