//! The text a run is fed: a workload — vocabulary size, word lengths, words per line, word
//! frequencies (uniform or Zipf), ASCII or multi-byte UTF-8 — and the generator of its lines.
//!
//! A workload is written as a spec: `classic` (the 40-word vocabulary of
//! `weir_examples::generator::WORDS`, 1 to 12 words a line, uniform: the issue-7 bench's only
//! input) or comma-separated settings over the defaults, e.g.
//! `vocab=1000000,len=3-12,line=1-20,dist=zipf:1.1,text=utf8`:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `vocab` | distinct words | 10000 |
//! | `len` | characters per word, uniform in `MIN-MAX` (or one number) | `3-10` |
//! | `line` | words per line, uniform in `MIN-MAX` (or one number) | `1-12` |
//! | `dist` | `uniform`, or `zipf:S` (word of rank r drawn with weight 1/r^S) | `uniform` |
//! | `text` | `ascii` (a–z), or `utf8` (letters of 2 and 3 bytes mixed with ASCII) | `ascii` |
//!
//! The vocabulary and the lines are fixed by the seed, so every system of a run reads the same
//! text.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use weir_examples::generator::WORDS;

/// What a run's text is made of.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Workload {
    /// The spec it was parsed from (its name in the report).
    pub(crate) spec: String,
    /// `classic`: the fixed 40-word vocabulary instead of a generated one.
    classic: bool,
    vocabulary: usize,
    word_len: (usize, usize),
    words_per_line: (usize, usize),
    /// Zipf's exponent; `None`: uniform.
    zipf: Option<f64>,
    utf8: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            spec: "classic".to_owned(),
            classic: true,
            vocabulary: WORDS.len(),
            word_len: (2, 7),
            words_per_line: (1, 12),
            zipf: None,
            utf8: false,
        }
    }
}

impl Workload {
    /// Whether this is the `classic` workload (the issue-7 text).
    pub(crate) fn is_classic(&self) -> bool {
        self.classic
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// `MIN-MAX` or `N`, with `1 <= MIN <= MAX <= limit`.
fn range(key: &str, value: &str, limit: usize) -> Result<(usize, usize), String> {
    let (lo, hi) = value.split_once('-').unwrap_or((value, value));
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|e| format!("workload: {key}={value}: {e}"))
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo == 0 || lo > hi || hi > limit {
        return Err(format!(
            "workload: {key}={value}: want MIN-MAX with 1 <= MIN <= MAX <= {limit}"
        ));
    }
    Ok((lo, hi))
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec == "classic" {
            return Ok(Workload::default());
        }
        let mut w = Workload {
            spec: spec.to_owned(),
            classic: false,
            vocabulary: 10_000,
            word_len: (3, 10),
            words_per_line: (1, 12),
            zipf: None,
            utf8: false,
        };
        for setting in spec.split(',').filter(|s| !s.trim().is_empty()) {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("workload: {setting:?} is not KEY=VALUE"))?;
            match key.trim() {
                "vocab" => {
                    w.vocabulary = value
                        .trim()
                        .parse()
                        .map_err(|e| format!("workload: vocab={value}: {e}"))?;
                    if !(1..=10_000_000).contains(&w.vocabulary) {
                        return Err(format!("workload: vocab={value}: want 1 to 10000000"));
                    }
                }
                "len" => w.word_len = range("len", value, 64)?,
                "line" => w.words_per_line = range("line", value, 1000)?,
                "dist" => {
                    w.zipf = match value.trim() {
                        "uniform" => None,
                        z => {
                            let s = z
                                .strip_prefix("zipf:")
                                .ok_or_else(|| {
                                    format!("workload: dist={value}: want uniform or zipf:S")
                                })?
                                .parse::<f64>()
                                .map_err(|e| format!("workload: dist={value}: {e}"))?;
                            if !(s > 0.0 && s < 10.0) {
                                return Err(format!("workload: dist={value}: want 0 < S < 10"));
                            }
                            Some(s)
                        }
                    }
                }
                "text" => {
                    w.utf8 = match value.trim() {
                        "ascii" => false,
                        "utf8" => true,
                        _ => return Err(format!("workload: text={value}: want ascii or utf8")),
                    }
                }
                other => {
                    return Err(format!(
                        "workload: unknown key {other:?} (vocab, len, line, dist, text)"
                    ));
                }
            }
        }
        // Enough distinct words of these lengths must exist (26^len ASCII words per length).
        let possible: f64 = (w.word_len.0..=w.word_len.1)
            .map(|len| 26f64.powi(len.min(30) as i32))
            .sum();
        if (w.vocabulary as f64) > possible / 2.0 {
            return Err(format!(
                "workload: vocab={} distinct words do not fit len={}-{}",
                w.vocabulary, w.word_len.0, w.word_len.1
            ));
        }
        Ok(w)
    }
}

/// The `workloads` phase's default spread: vocabularies from 10^2 to 10^6, short and long
/// lines, uniform and Zipf frequencies, ASCII and multi-byte UTF-8, and the classic text.
pub(crate) fn spread() -> Vec<Workload> {
    [
        "classic",
        "vocab=100,len=3-8,line=1-12",
        "vocab=10000,len=3-10,line=1-12",
        "vocab=1000000,len=4-12,line=1-12",
        "vocab=100000,len=3-10,line=1-20,dist=zipf:1.0",
        "vocab=100000,len=3-10,line=1-12,text=utf8",
        "vocab=10000,len=8-16,line=1-4",
    ]
    .iter()
    .filter_map(|spec| spec.parse().ok())
    .collect()
}

/// Letters of the `utf8` text: 2-byte (Greek, Cyrillic) and 3-byte (Hiragana, CJK) ones.
const WIDE: &[char] = &[
    'α', 'β', 'γ', 'δ', 'ε', 'ζ', 'η', 'θ', 'λ', 'μ', 'π', 'σ', 'ж', 'з', 'и', 'к', 'л', 'м', 'н',
    'п', 'あ', 'い', 'う', 'え', 'お', 'か', 'き', 'く', '山', '川', '日', '月', '水', '火',
];

/// Lines of a workload's text, drawn from its vocabulary.
#[derive(Debug)]
pub(crate) struct Lines {
    words: Vec<String>,
    /// Zipf: the cumulative weight of ranks `0..=r`, ending at 1.
    cumulative: Option<Vec<f64>>,
    words_per_line: (usize, usize),
    rng: fastrand::Rng,
}

impl Lines {
    /// The generator of `workload`'s text, fixed by `seed`.
    pub(crate) fn new(workload: &Workload, seed: u64) -> Lines {
        let mut rng = fastrand::Rng::with_seed(seed);
        let words = if workload.classic {
            WORDS.iter().map(|w| (*w).to_owned()).collect()
        } else {
            vocabulary(workload, &mut rng)
        };
        let cumulative = workload.zipf.map(|s| {
            let mut total = 0.0;
            let mut c: Vec<f64> = (1..=words.len())
                .map(|r| {
                    total += 1.0 / (r as f64).powf(s);
                    total
                })
                .collect();
            c.iter_mut().for_each(|x| *x /= total);
            c
        });
        Lines {
            words,
            cumulative,
            words_per_line: workload.words_per_line,
            rng,
        }
    }

    /// The vocabulary, by index.
    pub(crate) fn words(&self) -> &[String] {
        &self.words
    }

    /// One line (without its `\n`) into `out`, and the index of each word in it into `seen`.
    pub(crate) fn line(&mut self, out: &mut String, seen: &mut Vec<u32>) {
        let n = self
            .rng
            .usize(self.words_per_line.0..=self.words_per_line.1);
        for k in 0..n {
            let i = match &self.cumulative {
                None => self.rng.usize(..self.words.len()),
                Some(c) => {
                    let u = self.rng.f64();
                    c.partition_point(|x| *x < u).min(c.len() - 1)
                }
            };
            if k > 0 {
                out.push(' ');
            }
            out.push_str(&self.words[i]);
            seen.push(i as u32);
        }
    }
}

/// `workload.vocabulary` distinct words, lengths uniform in `word_len`, shuffled (so that with
/// Zipf frequencies a word's rank does not follow its length).
fn vocabulary(workload: &Workload, rng: &mut fastrand::Rng) -> Vec<String> {
    let mut seen = HashSet::with_capacity(workload.vocabulary);
    let mut words = Vec::with_capacity(workload.vocabulary);
    while words.len() < workload.vocabulary {
        let len = rng.usize(workload.word_len.0..=workload.word_len.1);
        let word: String = (0..len)
            .map(|_| {
                if workload.utf8 && rng.u8(..) < 96 {
                    WIDE[rng.usize(..WIDE.len())]
                } else {
                    rng.lowercase()
                }
            })
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    rng.shuffle(&mut words);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused_in_one_sentence() {
        let w: Workload = "vocab=1000000,len=3-12,line=1-20,dist=zipf:1.1,text=utf8"
            .parse()
            .expect("a valid spec");
        assert_eq!(
            (w.vocabulary, w.word_len, w.words_per_line, w.zipf, w.utf8),
            (1_000_000, (3, 12), (1, 20), Some(1.1), true)
        );
        assert_eq!("classic".parse::<Workload>(), Ok(Workload::default()));
        for bad in [
            "vocab=0",
            "len=5-3",
            "line=0",
            "dist=zipf",
            "text=latin1",
            "colour=blue",
            "vocab=100000,len=2",
        ] {
            let err = bad.parse::<Workload>().expect_err(bad);
            assert!(err.starts_with("workload: "), "{bad}: {err}");
        }
    }

    #[test]
    fn lines_follow_the_workload() {
        let w: Workload = "vocab=500,len=4-6,line=3-5,text=utf8"
            .parse()
            .expect("spec");
        let mut lines = Lines::new(&w, 1);
        assert_eq!(lines.words().len(), 500);
        let distinct: HashSet<&String> = lines.words().iter().collect();
        assert_eq!(distinct.len(), 500);
        assert!(lines.words().iter().any(|w| w.len() > w.chars().count()));
        for _ in 0..100 {
            let (mut out, mut seen) = (String::new(), Vec::new());
            lines.line(&mut out, &mut seen);
            let words: Vec<&str> = out.split_whitespace().collect();
            assert!((3..=5).contains(&words.len()), "{out}");
            for (word, i) in words.iter().zip(&seen) {
                assert_eq!(*word, lines.words()[*i as usize]);
                assert!((4..=6).contains(&word.chars().count()));
            }
        }
    }

    #[test]
    fn zipf_makes_the_first_ranks_frequent() {
        let w: Workload = "vocab=1000,dist=zipf:1.2".parse().expect("spec");
        let mut lines = Lines::new(&w, 2);
        let mut counts = vec![0u32; 1000];
        let (mut out, mut seen) = (String::new(), Vec::new());
        for _ in 0..2000 {
            lines.line(&mut out, &mut seen);
        }
        for i in &seen {
            counts[*i as usize] += 1;
        }
        let top: u32 = counts[..10].iter().sum();
        let total: u32 = counts.iter().sum();
        // With s = 1.2 over 1000 ranks the top 10 carry about 60 % of the words.
        assert!(f64::from(top) > 0.4 * f64::from(total), "{top} of {total}");
    }
}
