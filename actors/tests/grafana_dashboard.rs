//! `docs/grafana-dashboard.json` parses and queries only metrics that `/metrics` serves.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::time::Duration;

use weir_actors::{EngineMetrics, Event, SourceLag};

/// Every metric family a scrape can show, with every labelled family populated once.
fn served() -> BTreeSet<String> {
    let m = EngineMetrics::new();
    let actor = || "receiver-0".to_owned();
    for event in [
        Event::ActorFailed {
            actor: actor(),
            reason: "killed".into(),
        },
        Event::ActorRestarted {
            actor: actor(),
            attempt: 1,
            delay_ms: 1,
        },
        Event::ActorGaveUp {
            actor: actor(),
            child: actor(),
            reason: "too often".into(),
        },
        Event::BlockStored {
            actor: actor(),
            stream: 0,
            records: 1,
            bytes: 1,
        },
        Event::ReceiverError {
            actor: actor(),
            stream: 0,
            error: "e".into(),
        },
    ] {
        m.observe(&event);
    }
    m.wal_group_committed("wal", 1, 1, Duration::from_micros(1), 1);
    m.set_source_probe(|| {
        vec![SourceLag {
            source: "log".into(),
            partition: 0,
            planned: 0,
            latest: 1,
        }]
    });
    m.encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_grafana_dashboard_queries_only_served_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let served = served();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("weir_") || word.starts_with("process_")) {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s).filter(|f| served.contains(*f)))
                    .unwrap_or(word);
                assert!(
                    served.contains(family),
                    "panel {:?} queries {word}, which /metrics does not serve",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(
        queried >= 20,
        "the dashboard charts the metrics ({queried})"
    );
}
