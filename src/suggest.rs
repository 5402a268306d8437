//! "Did you mean": the closest of the known names to one that is not known (an unknown
//! field, role, dependency or server), by edit distance. One place, so every message
//! suggests the same way.

/// The known name closest to `unknown`, when it is close enough to be a likely typo: at
/// most a third of its length away (at least 1, at most 3 edits), or differing only in
/// case, `-`/`_` or by one transposition.
pub fn closest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (unknown.chars().count() / 3).clamp(1, 3);
    let fold = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let folded = fold(unknown);
    known
        .into_iter()
        .filter(|k| *k != unknown)
        .map(|k| {
            let distance = if fold(k) == folded {
                0
            } else {
                strsim::damerau_levenshtein(&folded, &fold(k))
            };
            (distance, k)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, k)| (*d, *k))
        .map(|(_, k)| k)
}

/// `" (did you mean `x`?)"`, or nothing.
pub fn did_you_mean<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(unknown, known).map_or_else(String::new, |k| format!("; did you mean `{k}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_find_nothing() {
        let known = [
            "observability",
            "vpsmanager",
            "web-1",
            "web-2",
            "dependsOn",
            "driftPolicy",
        ];
        assert_eq!(closest("observabilty", known), Some("observability"));
        assert_eq!(closest("vpsmanagr", known), Some("vpsmanager"));
        assert_eq!(closest("web_1", known), Some("web-1"));
        assert_eq!(closest("dependOn", known), Some("dependsOn"));
        assert_eq!(closest("driftpolicy", known), Some("driftPolicy"));
        assert_eq!(closest("database", known), None);
        assert_eq!(closest("x", known), None);
        assert_eq!(did_you_mean("web-3", known), "; did you mean `web-1`?");
    }
}
