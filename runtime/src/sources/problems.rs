//! Rate-limited warnings about bad input: [`ProblemLog`], shared by the sources that read
//! text (the file stream, the socket receiver).
//!
//! Every problem is counted by its source, exactly (`FileStreamStats`, `SocketStats`); what
//! is limited is the `tracing` output. Of each kind of problem (`bad_utf8`, `long_line`, …)
//! at most one warning is logged per interval (10 s by default): the first problem of an
//! interval is logged as it happens, as a sample, and carries the number of problems of its
//! kind that were counted but not logged since the previous warning. So ten megabytes of bad
//! lines make a few warnings, not a gigabyte of them, and the counters still say how many
//! there were. A problem counted but not logged is told by the next warning of its kind; if
//! none comes, only the counters know it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long a kind of problem stays quiet after a warning, by default.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Decides which problems are logged: at most one per kind per interval. Shared (behind an
/// `Arc`) by the clones of a source, so restarts do not reset it.
#[derive(Debug)]
pub(crate) struct ProblemLog {
    interval: Duration,
    kinds: Mutex<Vec<KindLog>>,
}

/// What is remembered of one kind: when it was last logged and what was counted since.
#[derive(Debug)]
struct KindLog {
    kind: &'static str,
    logged_at: Instant,
    suppressed: u64,
}

impl Default for ProblemLog {
    fn default() -> Self {
        ProblemLog::new(DEFAULT_INTERVAL)
    }
}

impl ProblemLog {
    /// A log that warns about each kind at most once per `interval` (`Duration::ZERO`: every
    /// problem is logged).
    pub(crate) fn new(interval: Duration) -> Self {
        ProblemLog {
            interval,
            kinds: Mutex::new(Vec::new()),
        }
    }

    /// The interval.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes note of one problem of `kind`: `Some(n)` if it is to be logged now, with `n` the
    /// problems of this kind counted and not logged since the last warning; `None` if it is
    /// only counted (a warning of its kind was logged less than the interval ago).
    pub(crate) fn admit(&self, kind: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(log) = kinds.iter_mut().find(|k| k.kind == kind) else {
            kinds.push(KindLog {
                kind,
                logged_at: now,
                suppressed: 0,
            });
            return Some(0);
        };
        if now.saturating_duration_since(log.logged_at) < self.interval {
            log.suppressed += 1;
            return None;
        }
        log.logged_at = now;
        Some(std::mem::take(&mut log.suppressed))
    }
}

/// The words a warning ends with when `suppressed` problems of its kind were not logged.
pub(crate) fn suppressed_note(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        1 => " (1 more problem of this kind was counted, not logged, since the last warning)"
            .to_owned(),
        n => format!(
            " ({n} more problems of this kind were counted, not logged, since the last warning)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_warning_per_kind_per_interval_carrying_the_count_in_between() {
        let log = ProblemLog::new(Duration::from_secs(10));
        assert_eq!(log.admit("bad_utf8"), Some(0));
        for _ in 0..1000 {
            assert_eq!(log.admit("bad_utf8"), None);
        }
        // Another kind has a clock of its own.
        assert_eq!(log.admit("long_line"), Some(0));
        assert_eq!(log.admit("long_line"), None);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(log.admit("bad_utf8"), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(log.admit("bad_utf8"), Some(1001));
        assert_eq!(log.admit("bad_utf8"), None);
        assert_eq!(log.admit("long_line"), Some(1));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(log.admit("bad_utf8"), Some(1));
        assert_eq!(log.admit("long_line"), Some(0));
    }

    #[test]
    fn a_zero_interval_logs_every_problem() {
        let log = ProblemLog::new(Duration::ZERO);
        for _ in 0..10 {
            assert_eq!(log.admit("bad_utf8"), Some(0));
        }
    }

    #[test]
    fn the_note_counts_what_was_not_logged() {
        assert_eq!(suppressed_note(0), "");
        assert!(suppressed_note(1).contains("1 more problem of this kind was"));
        assert!(suppressed_note(7).contains("7 more problems of this kind were"));
    }
}

#[cfg(test)]
pub(crate) mod capture {
    //! A `tracing` subscriber for tests that keeps every warning (and error) logged, as one
    //! line each (the message, then the fields), with the thread that logged it.
    //!
    //! It is the process's global subscriber, installed once: a subscriber set for one thread
    //! only (`set_default`) misses events when another test's thread registers a callsite
    //! first — `tracing` then caches that nobody is interested in it.

    use std::fmt::Write as _;
    use std::sync::{Mutex, OnceLock, PoisonError};
    use std::thread::ThreadId;

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Metadata, Subscriber, span};

    /// Every warning logged in the process since the subscriber was installed.
    static LOGGED: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());
    static INSTALLED: OnceLock<bool> = OnceLock::new();

    /// The warnings this thread logs from the moment [`Warnings::install`] is called.
    #[derive(Debug)]
    pub(crate) struct Warnings {
        thread: ThreadId,
        from: usize,
    }

    impl Warnings {
        /// Starts keeping this thread's warnings (installing the subscriber if needed).
        ///
        /// # Panics
        ///
        /// If another global subscriber is installed.
        pub(crate) fn install() -> Warnings {
            let installed = *INSTALLED
                .get_or_init(|| tracing::subscriber::set_global_default(Collector).is_ok());
            assert!(installed, "another global tracing subscriber is installed");
            // Callsites registered before the subscriber was: ask them again.
            tracing::callsite::rebuild_interest_cache();
            Warnings {
                thread: std::thread::current().id(),
                from: logged().len(),
            }
        }

        /// The lines this thread logged since [`install`](Self::install).
        pub(crate) fn lines(&self) -> Vec<String> {
            logged()[self.from..]
                .iter()
                .filter(|(thread, _)| *thread == self.thread)
                .map(|(_, line)| line.clone())
                .collect()
        }
    }

    fn logged() -> std::sync::MutexGuard<'static, Vec<(ThreadId, String)>> {
        LOGGED.lock().unwrap_or_else(PoisonError::into_inner)
    }

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
    }

    struct Collector;

    impl Subscriber for Collector {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= Level::WARN
        }

        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }

        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut line = Line(String::new());
            event.record(&mut line);
            logged().push((std::thread::current().id(), line.0));
        }

        fn enter(&self, _: &span::Id) {}

        fn exit(&self, _: &span::Id) {}
    }
}
