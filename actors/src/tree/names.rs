//! The stable names actors are registered under.
//!
//! Tests and the CLI find actors by these names (ractor's registry), and a restarted actor keeps
//! its name. ractor's registry is process-global, so every name carries the engine's prefix
//! (empty by default): two engines in one process — or two tests — use different prefixes.

use crate::ingest::blocks::StreamId;

/// Builds the names of one engine's actors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (e.g. `""`, or `"test-17/"`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Names {
            prefix: prefix.into(),
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// `root`
    pub fn root(&self) -> String {
        self.name("root")
    }
    /// `event-bus`
    pub fn event_bus(&self) -> String {
        self.name("event-bus")
    }
    /// `control-endpoint`
    pub fn control_endpoint(&self) -> String {
        self.name("control-endpoint")
    }
    /// `driver`
    pub fn driver(&self) -> String {
        self.name("driver")
    }
    /// `receiver-tracker`
    pub fn receiver_tracker(&self) -> String {
        self.name("receiver-tracker")
    }
    /// `received-block-tracker`
    pub fn received_block_tracker(&self) -> String {
        self.name("received-block-tracker")
    }
    /// `receiver-supervisor-<stream>`
    pub fn receiver_supervisor(&self, stream: StreamId) -> String {
        self.name(&format!("receiver-supervisor-{stream}"))
    }
    /// `receiver-<stream>`
    pub fn receiver(&self, stream: StreamId) -> String {
        self.name(&format!("receiver-{stream}"))
    }
    /// `job-generator`
    pub fn job_generator(&self) -> String {
        self.name("job-generator")
    }
    /// `job-scheduler`
    pub fn job_scheduler(&self) -> String {
        self.name("job-scheduler")
    }
    /// `executor-<n>`
    pub fn executor(&self, n: usize) -> String {
        self.name(&format!("executor-{n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_documented_ones_under_the_prefix() {
        let n = Names::default();
        assert_eq!(n.receiver_supervisor(3), "receiver-supervisor-3");
        assert_eq!(n.executor(0), "executor-0");
        assert_eq!(
            Names::new("t/").received_block_tracker(),
            "t/received-block-tracker"
        );
    }
}
