//! The batch timeline, the WAL and checkpoint status, and the event log.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

use crate::cli::format::{Severity, bytes, clock, describe, severity};
use crate::cli::watch::state::State;

pub(super) fn batches(frame: &mut Frame<'_>, area: Rect, state: &State) {
    // The newest batches that fit, newest at the bottom.
    let fit = area.height.saturating_sub(3) as usize;
    let skip = state.batches.len().saturating_sub(fit);
    let rows: Vec<Row<'_>> = state
        .batches
        .iter()
        .skip(skip)
        .map(|b| {
            let delay = if b.scheduling_delay_ms > b.processing_ms.max(1) * 2 {
                Style::default().fg(Color::Yellow)
            } else {
                Style::default()
            };
            Row::new(vec![
                ratatui::widgets::Cell::from(clock(b.time_ms)),
                ratatui::widgets::Cell::from(format!("{} ms", b.scheduling_delay_ms)).style(delay),
                ratatui::widgets::Cell::from(format!("{} ms", b.processing_ms)),
                ratatui::widgets::Cell::from(b.records.to_string()),
                ratatui::widgets::Cell::from(format!("{:.0}", b.records_per_s)),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(vec!["batch", "delay", "process", "records", "rec/s"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::default().borders(Borders::ALL).title(" batches "));
    frame.render_widget(table, area);
}

pub(super) fn durability(frame: &mut Frame<'_>, area: Rect, state: &State) {
    let wal = &state.wal;
    let cp = &state.checkpoints;
    let mut lines = vec![
        Line::from(format!(
            "WAL   {} blocks, {} records, {}",
            wal.blocks,
            wal.records,
            bytes(wal.bytes)
        )),
        Line::from(format!(
            "      last roll {}, {} cleaned, {} torn tails",
            wal.last_roll.as_deref().unwrap_or("-"),
            wal.cleaned,
            wal.torn_tails
        )),
        Line::from(match cp.last {
            Some((id, size, at)) => format!("ckpt  newest {id} ({}) at {}", bytes(size), clock(at)),
            None => "ckpt  none written yet".to_owned(),
        }),
        Line::from(format!(
            "      {} written, {} failed, {} skipped",
            cp.written, cp.failed, cp.skipped
        )),
        Line::from(format!(
            "      restored from {}",
            cp.restored.map_or("-".to_owned(), |id| id.to_string())
        )),
    ];
    if let Some(problem) = &cp.last_problem {
        lines.push(Line::from(Span::styled(
            format!("      {problem}"),
            Style::default().fg(Color::Red),
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" WAL and checkpoints "),
        ),
        area,
    );
}

pub(super) fn events(frame: &mut Frame<'_>, area: Rect, state: &State) {
    let fit = area.height.saturating_sub(2) as usize;
    let skip = state.events.len().saturating_sub(fit);
    let lines: Vec<Line<'_>> = state
        .events
        .iter()
        .skip(skip)
        .map(|r| {
            let style = match severity(&r.event) {
                Severity::Error => Style::default().fg(Color::Red),
                Severity::Warning => Style::default().fg(Color::Yellow),
                Severity::Info => Style::default(),
            };
            Line::from(vec![
                Span::styled(
                    clock(r.time_ms),
                    Style::default().add_modifier(Modifier::DIM),
                ),
                Span::raw(" "),
                Span::styled(describe(&r.event), style),
            ])
        })
        .collect();
    let title = if state.missed > 0 {
        format!(" events ({} missed: this viewer was slow) ", state.missed)
    } else {
        " events ".to_owned()
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}
