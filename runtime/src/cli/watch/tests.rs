//! `weir watch`'s view rendered from a fixed state on ratatui's `TestBackend`.

use super::input::{Action, on_key};
use super::state::{Link, State};
use super::view::render;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use weir_actors::Event;
use weir_actors::EventRecord;
use weir_actors::control::{ActorInfo, ActorState, TreeSnapshot};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const T0: u64 = 1_700_000_000_000; // 22:13:20.000 UTC

fn actor(name: &str, parent: Option<&str>, state: ActorState, restarts: u32) -> ActorInfo {
    ActorInfo {
        name: name.into(),
        parent: parent.map(Into::into),
        state,
        restarts,
        last_failure: (restarts > 0).then(|| "killed".to_owned()),
    }
}

fn record(offset_ms: u64, event: Event) -> EventRecord {
    EventRecord {
        time_ms: T0 + offset_ms,
        event,
    }
}

fn fixed_state() -> State {
    let mut state = State::new("127.0.0.1:7070", true);
    state.connected("weir 0.1.0".into(), 4242);
    let snapshot = TreeSnapshot {
        time_ms: T0,
        actors: vec![
            actor("root", None, ActorState::Running, 0),
            actor("event-bus", Some("root"), ActorState::Running, 0),
            actor("driver", Some("root"), ActorState::Running, 0),
            actor("receiver-tracker", Some("driver"), ActorState::Running, 0),
            actor(
                "receiver-supervisor-0",
                Some("receiver-tracker"),
                ActorState::Running,
                0,
            ),
            actor(
                "receiver-0",
                Some("receiver-supervisor-0"),
                ActorState::Running,
                0,
            ),
        ],
        recent: vec![
            record(
                0,
                Event::BatchCompleted {
                    batch_time_ms: T0,
                    scheduling_delay_ms: 3,
                    processing_ms: 12,
                    records: 100,
                },
            ),
            record(
                10,
                Event::CheckpointWritten {
                    store: "data/checkpoints".into(),
                    id: 7,
                    bytes: 2048,
                    duration_ms: Some(12),
                },
            ),
        ],
    };
    state.apply_snapshot(&snapshot, true);
    for event in [
        record(
            1000,
            Event::BatchCompleted {
                batch_time_ms: T0 + 1000,
                scheduling_delay_ms: 4,
                processing_ms: 10,
                records: 250,
            },
        ),
        record(
            1200,
            Event::ActorFailed {
                actor: "receiver-0".into(),
                reason: "killed".into(),
            },
        ),
        record(
            1201,
            Event::ActorRestarted {
                actor: "receiver-0".into(),
                attempt: 1,
                delay_ms: 100,
            },
        ),
        record(
            1300,
            Event::BlockStored {
                actor: "receiver-supervisor-0".into(),
                stream: 0,
                records: 50,
                bytes: 4096,
            },
        ),
    ] {
        state.apply_event(&event);
    }
    state
}

fn draw(state: &State, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|f| render(f, state)).expect("draw");
    terminal.backend().buffer().clone()
}

fn lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            (0..area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect()
}

fn row_of(buffer: &Buffer, needle: &str) -> u16 {
    let found = lines(buffer).iter().position(|l| l.contains(needle));
    found.unwrap_or_else(|| panic!("`{needle}` is not on screen:\n{}", lines(buffer).join("\n")))
        as u16
}

#[test]
fn the_whole_screen_from_a_fixed_state() {
    let state = fixed_state();
    let screen = lines(&draw(&state, 110, 26));
    let expected = include_str!("fixtures/watch-110x26.txt");
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(
        screen,
        expected,
        "the screen changed; now:\n{}",
        screen.join("\n")
    );
}

#[test]
fn the_tree_shows_state_restarts_and_last_failure_and_marks_the_selection() {
    let mut state = fixed_state();
    let buffer = draw(&state, 110, 26);
    let row = row_of(&buffer, "receiver-0");
    let text = &lines(&buffer)[row as usize];
    assert!(text.contains("restarting"), "{text}");
    assert!(text.contains(" 1 "), "one restart: {text}");
    assert!(text.contains("killed"), "{text}");
    // The state is coloured: restarting is yellow.
    let x = text.find("restarting").expect("state") as u16;
    assert_eq!(buffer[(x, row)].fg, Color::Yellow);
    // The selection starts on the root and follows the arrows.
    let root = row_of(&buffer, "> root");
    assert!(buffer[(3, root)].modifier.contains(Modifier::REVERSED));
    for _ in 0..5 {
        assert_eq!(on_key(&mut state, key(KeyCode::Down)), Action::Redraw);
    }
    assert_eq!(state.selected_actor(), Some("receiver-0"));
    let buffer = draw(&state, 110, 26);
    assert!(lines(&buffer)[row_of(&buffer, "receiver-0") as usize].contains("> "));
}

#[test]
fn kill_asks_first_and_the_prompt_is_on_screen() {
    let mut state = fixed_state();
    state.selected = 5;
    assert_eq!(on_key(&mut state, key(KeyCode::Char('k'))), Action::Redraw);
    let buffer = draw(&state, 110, 26);
    row_of(
        &buffer,
        "Kill receiver-0? Its supervisor will restart it. y: kill",
    );
    assert_eq!(
        on_key(&mut state, key(KeyCode::Char('y'))),
        Action::Kill("receiver-0".into())
    );
    // Any other key cancels.
    on_key(&mut state, key(KeyCode::Char('k')));
    assert_eq!(on_key(&mut state, key(KeyCode::Char('n'))), Action::Redraw);
    assert_eq!(state.confirm_kill, None);
    assert_eq!(on_key(&mut state, key(KeyCode::Char('q'))), Action::Quit);
}

#[test]
fn without_a_token_kill_explains_what_is_missing() {
    let mut state = fixed_state();
    state.has_token = false;
    on_key(&mut state, key(KeyCode::Char('k')));
    assert_eq!(state.confirm_kill, None);
    let buffer = draw(&state, 110, 26);
    row_of(&buffer, "killing needs the engine's token");
}

#[test]
fn a_lost_connection_says_so_and_a_reconnect_too() {
    let mut state = fixed_state();
    state.lost("could not connect to the control endpoint at 127.0.0.1:7070".into());
    state.lost("could not connect to the control endpoint at 127.0.0.1:7070".into());
    assert!(matches!(state.link, Link::Lost { attempts: 2, .. }));
    let buffer = draw(&state, 140, 26);
    let header = &lines(&buffer)[0];
    assert!(
        header.contains("connection lost: could not connect") && header.contains("(attempt 2)"),
        "{header}"
    );
    assert_eq!(buffer[(30, 0)].fg, Color::Red);
    state.connected("weir 0.1.0".into(), 5000);
    let buffer = draw(&state, 110, 26);
    row_of(&buffer, "connected to weir 0.1.0 (pid 5000)");
    row_of(&buffer, "reconnected to weir 0.1.0 (pid 5000)");
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}
