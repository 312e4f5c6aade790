//! Keys: what each does to the [`State`], and what the loop must do next.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::State;

/// What the loop does after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing more than redrawing.
    Redraw,
    /// Leave.
    Quit,
    /// Kill this actor (confirmed).
    Kill(String),
}

/// Applies `key` to `state`.
///
/// * `q`, Esc, Ctrl-C: quit (Esc first cancels a pending confirmation).
/// * Up / Down (also PageUp / PageDown, Home / End): move the selection.
/// * `k`: ask to kill the selected actor; `y` or Enter confirms, any other key cancels.
pub(crate) fn on_key(state: &mut State, key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Redraw;
    }
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Action::Quit;
    }
    if let Some(actor) = state.confirm_kill.take() {
        return match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                state.status = Some((format!("killing {actor}..."), false));
                Action::Kill(actor)
            }
            _ => {
                state.status = Some((format!("not killing {actor}"), false));
                Action::Redraw
            }
        };
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Up => {
            state.move_selection(-1);
            Action::Redraw
        }
        KeyCode::Down => {
            state.move_selection(1);
            Action::Redraw
        }
        KeyCode::PageUp => {
            state.move_selection(-10);
            Action::Redraw
        }
        KeyCode::PageDown => {
            state.move_selection(10);
            Action::Redraw
        }
        KeyCode::Home => {
            state.selected = 0;
            Action::Redraw
        }
        KeyCode::End => {
            state.move_selection(isize::MAX);
            Action::Redraw
        }
        KeyCode::Char('k') => {
            match state.selected_actor().map(str::to_owned) {
                Some(actor) if state.has_token => state.confirm_kill = Some(actor),
                Some(_) => {
                    state.status = Some((
                        "killing needs the engine's token: start weir watch with --token-file"
                            .to_owned(),
                        true,
                    ));
                }
                None => {}
            }
            Action::Redraw
        }
        _ => Action::Redraw,
    }
}
