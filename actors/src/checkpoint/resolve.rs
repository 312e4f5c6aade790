//! Which checkpoint to restore: a pure decision over what the store has observed.
//!
//! The store lists the checkpoints present, then asks [`resolve`] what to do next; the answer
//! is either "read this one" or a final decision. Reading happens at the edge (in
//! `store.rs`); the policy — newest valid wins, every newer invalid one is reported as
//! skipped, nothing present is not an error, everything invalid is — lives here and is tested
//! without I/O.

use std::collections::BTreeMap;

use super::format::CheckpointId;

/// What reading one listed checkpoint showed; `T` is the decoded checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Observation<T> {
    /// It decoded and can be restored.
    Valid(T),
    /// It cannot be used; the reason is for people (events, logs, errors).
    Invalid(String),
    /// It was listed but gone when read (deleted by retention or by hand meanwhile).
    Vanished,
}

/// The next step of a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision<T> {
    /// Read this checkpoint and record the [`Observation`].
    Read(CheckpointId),
    /// Restore `id`; every newer checkpoint in `skipped` (newest first) could not be used.
    Use {
        /// The checkpoint to restore.
        id: CheckpointId,
        /// Its decoded content, moved out of the observations.
        data: T,
        /// The newer checkpoints passed over, with why.
        skipped: Vec<(CheckpointId, String)>,
    },
    /// No checkpoint is present: a fresh start.
    Empty,
    /// Checkpoints are present but none can be used (newest first, with why).
    NoneValid {
        /// Every checkpoint tried.
        tried: Vec<(CheckpointId, String)>,
    },
}

/// The reason given for a checkpoint that was listed but gone when read.
pub(crate) const VANISHED: &str = "it was deleted while the store was reading it";

/// Decides the next step, given the ids `listed` (any order) and what reading some of them
/// showed. Candidates are considered newest first: the first one not yet observed is to be
/// read; the first valid one is used (its data is moved out of `observed`); invalid and
/// vanished ones before it are skipped, with their reasons.
pub(crate) fn resolve<T>(
    listed: &[CheckpointId],
    observed: &mut BTreeMap<CheckpointId, Observation<T>>,
) -> Decision<T> {
    let mut newest_first = listed.to_vec();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    newest_first.dedup();
    if newest_first.is_empty() {
        return Decision::Empty;
    }
    let mut skipped = Vec::new();
    for id in newest_first {
        match observed.remove(&id) {
            None => return Decision::Read(id),
            Some(Observation::Valid(data)) => return Decision::Use { id, data, skipped },
            Some(Observation::Invalid(reason)) => {
                skipped.push((id, reason.clone()));
                observed.insert(id, Observation::Invalid(reason));
            }
            Some(Observation::Vanished) => {
                skipped.push((id, VANISHED.to_owned()));
                observed.insert(id, Observation::Vanished);
            }
        }
    }
    Decision::NoneValid { tried: skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Obs = Observation<&'static str>;

    fn ids(raw: &[u64]) -> Vec<CheckpointId> {
        raw.iter().copied().map(CheckpointId).collect()
    }

    fn seen(facts: &[(u64, Obs)]) -> BTreeMap<CheckpointId, Obs> {
        facts
            .iter()
            .map(|(id, obs)| (CheckpointId(*id), obs.clone()))
            .collect()
    }

    fn bad(reason: &str) -> Obs {
        Observation::Invalid(reason.to_owned())
    }

    #[test]
    fn nothing_listed_is_a_fresh_start() {
        assert_eq!(resolve::<()>(&[], &mut BTreeMap::new()), Decision::Empty);
    }

    #[test]
    fn newest_is_read_first_whatever_the_listing_order() {
        let listed = ids(&[3, 9, 5]);
        assert_eq!(
            resolve::<()>(&listed, &mut BTreeMap::new()),
            Decision::Read(CheckpointId(9))
        );
    }

    #[test]
    fn valid_newest_is_used_without_reading_older_ones() {
        let listed = ids(&[3, 5, 9]);
        assert_eq!(
            resolve(&listed, &mut seen(&[(9, Observation::Valid("nine"))])),
            Decision::Use {
                id: CheckpointId(9),
                data: "nine",
                skipped: vec![]
            }
        );
    }

    #[test]
    fn corrupt_newest_checkpoint_falls_back_to_previous() {
        let listed = ids(&[3, 5, 9]);
        let mut facts = seen(&[(9, bad("crc"))]);
        assert_eq!(
            resolve(&listed, &mut facts),
            Decision::Read(CheckpointId(5))
        );
        // The caller records what it read and asks again.
        facts.insert(CheckpointId(5), Observation::Valid("five"));
        assert_eq!(
            resolve(&listed, &mut facts),
            Decision::Use {
                id: CheckpointId(5),
                data: "five",
                skipped: vec![(CheckpointId(9), "crc".to_owned())]
            }
        );
    }

    #[test]
    fn every_skip_is_reported_newest_first() {
        let listed = ids(&[1, 2, 3, 4]);
        let mut facts = seen(&[
            (4, bad("truncated")),
            (3, Observation::Vanished),
            (2, bad("magic")),
            (1, Observation::Valid("one")),
        ]);
        assert_eq!(
            resolve(&listed, &mut facts),
            Decision::Use {
                id: CheckpointId(1),
                data: "one",
                skipped: vec![
                    (CheckpointId(4), "truncated".to_owned()),
                    (CheckpointId(3), VANISHED.to_owned()),
                    (CheckpointId(2), "magic".to_owned()),
                ]
            }
        );
    }

    #[test]
    fn all_invalid_is_an_error_listing_every_one() {
        let listed = ids(&[1, 2]);
        let mut facts = seen(&[(2, bad("crc")), (1, bad("short"))]);
        let expected = Decision::NoneValid {
            tried: vec![
                (CheckpointId(2), "crc".to_owned()),
                (CheckpointId(1), "short".to_owned()),
            ],
        };
        assert_eq!(resolve(&listed, &mut facts), expected);
        // Asking again gives the same answer: invalid observations are kept.
        assert_eq!(resolve(&listed, &mut facts), expected);
    }

    #[test]
    fn an_older_valid_one_is_never_preferred_to_a_newer_valid_one() {
        let listed = ids(&[1, 2]);
        let mut facts = seen(&[
            (1, Observation::Valid("one")),
            (2, Observation::Valid("two")),
        ]);
        assert_eq!(
            resolve(&listed, &mut facts),
            Decision::Use {
                id: CheckpointId(2),
                data: "two",
                skipped: vec![]
            }
        );
    }

    #[test]
    fn an_unlisted_observation_is_ignored() {
        let listed = ids(&[1]);
        let mut facts = seen(&[(7, Observation::Valid("seven"))]);
        assert_eq!(
            resolve(&listed, &mut facts),
            Decision::Read(CheckpointId(1))
        );
    }
}
