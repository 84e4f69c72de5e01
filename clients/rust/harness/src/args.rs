//! `--name value` and `--flag` arguments.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(argv: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut argv = argv.peekable();
        while let Some(a) = argv.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a}"));
            };
            let value = match argv.peek() {
                Some(v) if !v.starts_with("--") => argv.next().expect("peeked"),
                _ => "true".to_string(),
            };
            map.insert(name.to_string(), value);
        }
        Ok(Args(map))
    }

    pub fn str(&self, name: &str) -> Result<String, String> {
        self.0.get(name).cloned().ok_or_else(|| format!("--{name} is required"))
    }

    pub fn opt(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    pub fn num<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: not a number: {v}")),
        }
    }

    pub fn ms(&self, name: &str, default_ms: u64) -> Result<Duration, String> {
        Ok(Duration::from_millis(self.num(name, default_ms)?))
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| v == "true")
    }
}
