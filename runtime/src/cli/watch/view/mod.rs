//! Drawing the [`State`]: a header, the tree beside the batch timeline and the WAL and
//! checkpoint status, the event log, and a footer with the keys (or the kill confirmation).

mod panels;
mod tree;

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::state::{Link, State};

/// Draws `state` on the whole frame.
pub(crate) fn render(frame: &mut Frame<'_>, state: &State) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(8),
            Constraint::Length(10),
            Constraint::Length(1),
        ])
        .split(frame.area());
    frame.render_widget(header(state), rows[0]);
    let middle = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .split(rows[1]);
    tree::render(frame, middle[0], state);
    let right = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(4), Constraint::Length(8)])
        .split(middle[1]);
    panels::batches(frame, right[0], state);
    panels::durability(frame, right[1], state);
    panels::events(frame, rows[2], state);
    frame.render_widget(footer(state), rows[3]);
}

fn header(state: &State) -> Paragraph<'static> {
    let title = Span::styled(
        format!(" weir watch {} ", state.addr),
        Style::default().add_modifier(Modifier::BOLD),
    );
    let link = match &state.link {
        Link::Connecting => Span::styled("connecting...", Style::default().fg(Color::Yellow)),
        Link::Connected { server, pid } => Span::styled(
            format!("connected to {server} (pid {pid})"),
            Style::default().fg(Color::Green),
        ),
        Link::Lost { reason, attempts } => Span::styled(
            format!("connection lost: {reason}; reconnecting (attempt {attempts})"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    Paragraph::new(Line::from(vec![title, Span::raw("| "), link]))
}

fn footer(state: &State) -> Paragraph<'static> {
    if let Some(actor) = &state.confirm_kill {
        return Paragraph::new(Line::from(Span::styled(
            format!(
                " Kill {actor}? Its supervisor will restart it. y: kill, any other key: cancel "
            ),
            Style::default()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        )));
    }
    let mut spans = vec![Span::styled(
        " q quit  ↑↓ move  k kill ",
        Style::default().add_modifier(Modifier::DIM),
    )];
    if let Some((message, problem)) = &state.status {
        let colour = if *problem { Color::Red } else { Color::Cyan };
        spans.push(Span::raw("| "));
        spans.push(Span::styled(message.clone(), Style::default().fg(colour)));
    }
    Paragraph::new(Line::from(spans))
}
