//! Typed access to a plugin's configuration (a list of string pairs).

/// A parsed view of the configuration.
pub struct Settings<'a>(pub &'a [(String, String)]);

impl<'a> Settings<'a> {
    /// The raw value of `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A required value.
    pub fn required(&self, name: &str) -> Result<&'a str, String> {
        self.get(name).ok_or_else(|| format!("config `{name}` is required"))
    }

    /// An integer value, with a default when absent.
    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("config `{name}` must be a non-negative integer, got {v:?}")),
        }
    }

    /// A duration such as `90d`, `12h`, `30m`, `45s` or plain seconds, in seconds.
    pub fn duration_secs(&self, name: &str) -> Result<Option<i64>, String> {
        let Some(v) = self.get(name) else { return Ok(None) };
        parse_duration(v).map(Some).map_err(|e| format!("config `{name}`: {e}"))
    }
}

/// Parse `90d`, `12h`, `30m`, `45s` or plain seconds.
pub fn parse_duration(v: &str) -> Result<i64, String> {
    let v = v.trim();
    let (num, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c),
        _ => (v, 's'),
    };
    let n: i64 = num.trim().parse().map_err(|_| format!("{v:?} is not a duration"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(format!("{v:?}: unit must be s, m, h, d or w")),
    };
    if n <= 0 {
        return Err(format!("{v:?} must be positive"));
    }
    n.checked_mul(mult).ok_or_else(|| format!("{v:?} is too large"))
}
