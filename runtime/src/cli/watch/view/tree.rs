//! The supervision tree: one row per actor, indented under its supervisor.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};
use weir_actors::control::ActorState;

use crate::cli::watch::state::State;

fn state_style(state: ActorState) -> Style {
    match state {
        ActorState::Running => Style::default().fg(Color::Green),
        ActorState::Starting | ActorState::Restarting | ActorState::Stopping => {
            Style::default().fg(Color::Yellow)
        }
        _ => Style::default().fg(Color::Red),
    }
}

pub(super) fn render(frame: &mut Frame<'_>, area: Rect, state: &State) {
    let rows: Vec<Row<'_>> = state
        .actors
        .iter()
        .map(|a| {
            Row::new(vec![
                Cell::from(format!("{}{}", "  ".repeat(a.depth), a.name)),
                Cell::from(a.state.as_str()).style(state_style(a.state)),
                Cell::from(a.restarts.to_string()),
                Cell::from(a.last_failure.clone().unwrap_or_default()),
            ])
        })
        .collect();
    let name_width = state
        .actors
        .iter()
        .map(|a| a.depth * 2 + a.name.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    let table = Table::new(
        rows,
        [
            Constraint::Length(name_width as u16),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(vec!["actor", "state", "restarts", "last failure"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::default().borders(Borders::ALL).title(format!(
        " supervision tree ({} actors) ",
        state.actors.len()
    )))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut table_state = TableState::default();
    if !state.actors.is_empty() {
        table_state.select(Some(state.selected));
    }
    frame.render_stateful_widget(table, area, &mut table_state);
}
