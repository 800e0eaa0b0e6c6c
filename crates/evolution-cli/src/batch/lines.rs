//! Per-line tables of a batch, sized by the input's line count: a bit per
//! line, or a fingerprint per line, never the lines themselves.

use super::input::Fingerprint;

/// A set of line numbers, one bit each (a million lines: 125 KB).
#[derive(Debug, Clone, Default)]
pub struct LineSet {
    words: Vec<u64>,
}

impl LineSet {
    /// Whether `line` is in the set.
    pub fn contains(&self, line: usize) -> bool {
        self.words
            .get(line / 64)
            .is_some_and(|word| word & (1 << (line % 64)) != 0)
    }

    /// Adds `line`; returns whether it was new.
    pub fn insert(&mut self, line: usize) -> bool {
        let index = line / 64;
        if index >= self.words.len() {
            self.words.resize(index + 1, 0);
        }
        let bit = 1 << (line % 64);
        let new = self.words[index] & bit == 0;
        self.words[index] |= bit;
        new
    }
}

/// What each line of the input asks, by line number: the fingerprint of
/// its job (`None` for a blank or bad line), and whether its id is its line
/// number. Eight bytes and a bit per line: what `--resume` needs to tell an
/// answer that still fits its line from one that does not.
#[derive(Debug, Default)]
pub struct Asked {
    fingerprints: Vec<u64>,
    numbered: LineSet,
}

impl Asked {
    /// Records the job on `line`.
    pub fn record(&mut self, line: usize, fingerprint: Fingerprint, numbered: bool) {
        if line >= self.fingerprints.len() {
            self.fingerprints.resize(line + 1, 0);
        }
        self.fingerprints[line] = fingerprint.0;
        if numbered {
            self.numbered.insert(line);
        }
    }

    /// The fingerprint of the job on `line`, if there is one.
    pub fn fingerprint(&self, line: usize) -> Option<Fingerprint> {
        self.fingerprints
            .get(line)
            .copied()
            .filter(|&f| f != 0)
            .map(Fingerprint)
    }

    /// Whether the job on `line` is known by its line number.
    pub fn numbered(&self, line: usize) -> bool {
        self.numbered.contains(line)
    }

    /// The lines that have a job and are not in `done`, ordered by
    /// fingerprint (then line).
    pub fn open_by_fingerprint(&self, done: &LineSet) -> Vec<(u64, u32)> {
        let mut open: Vec<(u64, u32)> = self
            .fingerprints
            .iter()
            .enumerate()
            .filter(|&(line, &f)| f != 0 && !done.contains(line))
            .filter_map(|(line, &f)| Some((f, u32::try_from(line).ok()?)))
            .collect();
        open.sort_unstable();
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_grow_as_needed() {
        let mut set = LineSet::default();
        assert!(!set.contains(1_000_000));
        assert!(set.insert(1_000_000));
        assert!(!set.insert(1_000_000));
        assert!(set.contains(1_000_000));
        assert!(!set.contains(999_999));
        assert!(set.insert(1));
        assert!(set.contains(1));
    }

    #[test]
    fn open_lines_come_in_fingerprint_order() {
        let mut asked = Asked::default();
        asked.record(1, Fingerprint(30), true);
        asked.record(2, Fingerprint(10), false);
        asked.record(4, Fingerprint(10), true);
        let mut done = LineSet::default();
        done.insert(4);
        assert_eq!(asked.open_by_fingerprint(&done), [(10, 2), (30, 1)]);
        assert_eq!(asked.fingerprint(3), None);
        assert!(asked.numbered(1) && !asked.numbered(2));
    }
}
