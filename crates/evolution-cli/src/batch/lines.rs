//! Per-line tables of a batch, sized by the input's line count: a bit per
//! line, or a fingerprint per line, never the lines themselves.

use std::collections::HashMap;

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

    /// Forgets the job on `line` (it turned out to be a bad line).
    pub fn forget(&mut self, line: usize) {
        if let Some(fingerprint) = self.fingerprints.get_mut(line) {
            *fingerprint = 0;
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

    /// Finds, for answers whose own line now asks something else, a line
    /// that asks their question (see [`Vacancies`]).
    pub fn vacancies(&self) -> Vacancies<'_> {
        Vacancies {
            asked: self,
            lines: None,
            cursors: HashMap::new(),
        }
    }
}

/// The lines with a job, ordered by fingerprint, for answers looking for
/// the line that now asks their question: four bytes per line, built the
/// first time an answer looks, and a cursor for each question asked on more
/// than one line, so that taking every line of a question repeated k times
/// costs O(k), not O(k²).
pub struct Vacancies<'a> {
    asked: &'a Asked,
    lines: Option<Vec<u32>>,
    cursors: HashMap<usize, usize>,
}

impl Vacancies<'_> {
    /// The first line (in line order) that asks `fingerprint` and is not in
    /// `done`, if there is one.
    pub fn take(&mut self, fingerprint: Fingerprint, done: &LineSet) -> Option<usize> {
        let asked = self.asked;
        let of = |line: u32| asked.fingerprints[line as usize];
        let lines = self.lines.get_or_insert_with(|| {
            let mut lines: Vec<u32> = (0..asked.fingerprints.len())
                .filter(|&line| asked.fingerprints[line] != 0)
                .filter_map(|line| u32::try_from(line).ok())
                .collect();
            lines.sort_unstable_by_key(|&line| (of(line), line));
            lines
        });
        let group = lines.partition_point(|&line| of(line) < fingerprint.0);
        let mut at = self.cursors.get(&group).copied().unwrap_or(group);
        while at < lines.len() && of(lines[at]) == fingerprint.0 {
            let line = lines[at] as usize;
            at += 1;
            if !done.contains(line) {
                // Only a question on several lines needs its cursor kept.
                if at < lines.len() && of(lines[at]) == fingerprint.0 {
                    self.cursors.insert(group, at);
                } else {
                    self.cursors.remove(&group);
                }
                return Some(line);
            }
        }
        self.cursors.remove(&group);
        None
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
    fn vacancies_are_the_open_lines_asking_the_question_in_line_order() {
        let mut asked = Asked::default();
        asked.record(1, Fingerprint(30), true);
        asked.record(2, Fingerprint(10), false);
        asked.record(4, Fingerprint(10), true);
        asked.record(5, Fingerprint(10), true);
        asked.record(6, Fingerprint(20), true);
        assert_eq!(asked.fingerprint(3), None);
        assert!(asked.numbered(1) && !asked.numbered(2));
        let mut done = LineSet::default();
        done.insert(4);
        let mut vacancies = asked.vacancies();
        let mut take = |f: u64, done: &mut LineSet| {
            let line = vacancies.take(Fingerprint(f), done);
            if let Some(line) = line {
                done.insert(line);
            }
            line
        };
        assert_eq!(take(10, &mut done), Some(2));
        assert_eq!(take(10, &mut done), Some(5));
        assert_eq!(take(10, &mut done), None);
        assert_eq!(take(15, &mut done), None);
        assert_eq!(take(30, &mut done), Some(1));
        assert_eq!(take(30, &mut done), None);
        assert_eq!(take(99, &mut done), None);
        assert_eq!(take(20, &mut done), Some(6));
    }

    #[test]
    fn a_question_repeated_many_times_is_taken_in_linear_time() {
        let mut asked = Asked::default();
        for line in 1..=200_000 {
            asked.record(line, Fingerprint(7), true);
        }
        let mut done = LineSet::default();
        let mut vacancies = asked.vacancies();
        for line in 1..=200_000 {
            assert_eq!(vacancies.take(Fingerprint(7), &done), Some(line));
            done.insert(line);
        }
        assert_eq!(vacancies.take(Fingerprint(7), &done), None);
    }
}
