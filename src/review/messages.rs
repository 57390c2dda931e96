//! The human-readable lists an answer carries (denial reasons, warnings, audit notes), bounded as
//! they are built: a review of 250,000 images must not produce a 20 MB answer, nor format 250,000
//! messages that nobody reads.

/// Messages listed in full in one field; the rest are counted ("and N more"). A user fixes the
/// first few and resubmits; a longer list only makes the answer bigger.
pub const LISTED: usize = 10;

/// One listed message is cut to this many bytes: an image reference or a label value quoted in
/// it can be as long as the request body allows.
pub const MESSAGE_MAX_BYTES: usize = 1024;

/// A joined list, its "and N more" included, never exceeds this many bytes. The apiserver shows
/// the denial to the user and keeps audit annotations in every audit event; 4 KiB is already
/// more than a terminal screen.
pub const JOINED_MAX_BYTES: usize = 4096;

/// Room kept for "; and 18446744073709551615 more violations".
const MORE_RESERVE: usize = 64;

/// Between joined messages.
const SEPARATOR: &str = "; ";

/// The apiserver cuts every warning to this many characters once they total over
/// [`WARNINGS_TOTAL`]; doing it here keeps what the user sees predictable.
const WARNING_MAX: usize = 256;
/// See [`WARNING_MAX`].
const WARNINGS_TOTAL: usize = 4096;

/// A list of messages that keeps the first few (in order, each cut to [`MESSAGE_MAX_BYTES`],
/// together within [`JOINED_MAX_BYTES`]) and counts the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageList {
    listed: Vec<String>,
    /// Length of `listed` joined with [`SEPARATOR`].
    bytes: usize,
    total: usize,
}

impl MessageList {
    /// Adds a message. `make` runs only when the message will be listed, so the work per request
    /// is a count beyond the first few.
    pub fn push_with(&mut self, make: impl FnOnce() -> String) {
        self.total += 1;
        // Only a prefix is listed: once one message is left out, every later one is too.
        if self.listed.len() + 1 != self.total || self.listed.len() >= LISTED {
            return;
        }
        let mut message = make();
        cut(&mut message, MESSAGE_MAX_BYTES);
        let separator = if self.listed.is_empty() {
            0
        } else {
            SEPARATOR.len()
        };
        let bytes = self.bytes + separator + message.len();
        if bytes <= JOINED_MAX_BYTES - MORE_RESERVE {
            self.bytes = bytes;
            self.listed.push(message);
        }
    }

    /// Adds a message already formatted.
    pub fn push(&mut self, message: String) {
        self.push_with(|| message);
    }

    /// How many messages were added, listed or not.
    pub fn total(&self) -> usize {
        self.total
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The messages kept in full.
    pub fn listed(&self) -> &[String] {
        &self.listed
    }

    /// How many messages were counted but not kept.
    pub fn unlisted(&self) -> usize {
        self.total - self.listed.len()
    }

    /// The listed messages joined with "; ", then "; and N more <noun>s" when some were left
    /// out; at most [`JOINED_MAX_BYTES`].
    pub fn join(&self, noun: &str) -> String {
        let mut out = self.listed.join(SEPARATOR);
        let more = self.unlisted();
        if more > 0 {
            if !out.is_empty() {
                out.push_str(SEPARATOR);
            }
            out.push_str(&format!("and {}", counted(more, &format!("more {noun}"))));
        }
        cut(&mut out, JOINED_MAX_BYTES);
        out
    }
}

/// "1 violation", "3 violations".
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with "...".
pub fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
}

/// Warnings as an answer carries them: the first [`LISTED`] of `list` (then one saying how many
/// more there were), then `extra`, shaped as the apiserver would shape them.
pub fn warnings(list: &MessageList, extra: Option<String>) -> Vec<String> {
    let mut out = list.listed().to_vec();
    if list.unlisted() > 0 {
        out.push(format!(
            "and {} not shown",
            counted(list.unlisted(), "more warning")
        ));
    }
    out.extend(extra);
    bound_warnings(&mut out);
    out
}

/// Mirrors what the apiserver does to warnings, so users see exactly what we send: control
/// characters would make it drop a warning; past 4096 characters in all, each is cut to 256.
pub fn bound_warnings(warnings: &mut [String]) {
    for w in warnings.iter_mut() {
        if w.chars().any(char::is_control) {
            *w = w
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
        }
    }
    let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
    if total > WARNINGS_TOTAL {
        for w in warnings.iter_mut() {
            if let Some((cut, _)) = w.char_indices().nth(WARNING_MAX) {
                w.truncate(cut);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_a_prefix_and_counts_the_rest_without_formatting_it() {
        let mut list = MessageList::default();
        let mut formatted = 0;
        for i in 0..100_000 {
            list.push_with(|| {
                formatted += 1;
                format!("violation {i}")
            });
        }
        assert_eq!(list.total(), 100_000);
        assert_eq!(list.listed().len(), LISTED);
        assert_eq!(formatted, LISTED);
        let joined = list.join("violation");
        assert!(joined.starts_with("violation 0; violation 1; "), "{joined}");
        assert!(joined.ends_with("; and 99990 more violations"), "{joined}");
    }

    #[test]
    fn long_messages_are_cut_and_the_whole_stays_under_its_cap() {
        let mut list = MessageList::default();
        for _ in 0..20 {
            list.push("é".repeat(5000));
        }
        assert!(list.listed().iter().all(|m| m.len() <= MESSAGE_MAX_BYTES));
        assert!(list.listed().iter().all(|m| m.ends_with("...")));
        let joined = list.join("violation");
        assert!(joined.len() <= JOINED_MAX_BYTES, "{}", joined.len());
        assert!(joined.ends_with(&format!("and {} more violations", 20 - list.listed().len())));
    }

    #[test]
    fn few_messages_are_joined_as_they_are() {
        let mut list = MessageList::default();
        list.push("a".to_owned());
        list.push("b".to_owned());
        assert_eq!(list.join("violation"), "a; b");
        assert_eq!(list.unlisted(), 0);
    }

    #[test]
    fn warnings_are_bounded_like_the_apiserver_does() {
        let mut few = vec!["a\u{7}b\nc".to_owned()];
        bound_warnings(&mut few);
        assert_eq!(few, ["a b c"]);
        let mut many = vec!["x".repeat(1000); 5];
        bound_warnings(&mut many);
        assert!(many.iter().all(|w| w.chars().count() == WARNING_MAX));
        let mut under = vec!["y".repeat(1000); 4];
        bound_warnings(&mut under);
        assert!(under.iter().all(|w| w.len() == 1000));
    }

    #[test]
    fn warnings_are_capped_in_count() {
        let mut list = MessageList::default();
        for i in 0..1000 {
            list.push(format!("w{i}"));
        }
        let out = warnings(&list, Some("break glass".to_owned()));
        assert_eq!(out.len(), LISTED + 2);
        assert_eq!(out[LISTED], "and 990 more warnings not shown");
        assert_eq!(out[LISTED + 1], "break glass");
    }
}
