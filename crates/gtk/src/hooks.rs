//! The app's own test hooks, on only with `RELEASE_UPGRADER_GTK_TEST_DIR=DIR`:
//!
//! - `DIR/state.jsonl`: one JSON line per change of what is on screen (the page, the
//!   visible buttons with their names and sensitivity, the label texts, the text views,
//!   the open dialog), written from the widgets themselves, not from the model, so a test
//!   asserts on what a person would see;
//! - `DIR/NN-<page>[-<dialog>].png`: a screenshot per page and dialog shown (and per
//!   `resize`), rendered from the widgets with the window's own GSK renderer;
//! - `DIR/commands` (a FIFO the test makes): one command a line, performed on the real
//!   widgets so the real handlers run: `click NAME` (a visible, sensitive button),
//!   `answer CHOICE` (the open question's button, or its entry and OK), `activate NAME`
//!   (any visible widget, as its keyboard shortcut would: an expander opens), `resize
//!   WIDTH` (the window and an open dialog), `state` (record now); the last three record the state and a screenshot once
//!   laid out. A command that cannot be done is recorded as `{"error": …}`.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use gtk::prelude::*;
use gtk::{gdk, gio, glib};
use serde_json::{Value, json};

use crate::ui::App;

pub struct Hooks {
    dir: PathBuf,
    seq: Cell<u32>,
    last: RefCell<Value>,
    shots: RefCell<Vec<String>>,
}

/// What is visible under `w`.
#[derive(Default)]
struct Seen {
    buttons: Vec<Value>,
    labels: Vec<String>,
    texts: Vec<Value>,
    expanders: Vec<Value>,
}

fn walk(w: &gtk::Widget, root: &gtk::Widget, shown: bool, seen: &mut Seen) {
    let shown = shown && w.is_visible() && w.is_child_visible();
    if let Some(b) = w.downcast_ref::<gtk::Button>() {
        if shown {
            let bounds = b
                .compute_bounds(root)
                .map(|r| json!({"x": r.x(), "y": r.y(), "width": r.width(), "height": r.height()}));
            seen.buttons.push(json!({
                "name": b.widget_name().as_str(),
                "label": b.label().map(|l| l.replace('_', "")),
                "sensitive": b.is_sensitive(),
                "bounds": bounds,
            }));
        }
        return;
    }
    if let Some(l) = w.downcast_ref::<gtk::Label>()
        && shown
        && !l.text().is_empty()
    {
        seen.labels.push(l.text().to_string());
    }
    if let Some(t) = w.downcast_ref::<gtk::TextView>() {
        let buffer = t.buffer();
        let (start, end) = buffer.bounds();
        seen.texts.push(json!({
            "name": t.widget_name().as_str(),
            "shown": shown,
            "text": buffer.text(&start, &end, false).as_str(),
        }));
    }
    if let Some(e) = w.downcast_ref::<gtk::Expander>() {
        if shown {
            seen.expanders.push(json!({
                "name": e.widget_name().as_str(),
                "label": e.label().map(|l| l.replace('_', "")),
                "expanded": e.is_expanded(),
            }));
        }
        // A closed expander's child is not shown, but its text views still count.
        if let Some(child) = e.child() {
            walk(&child, root, shown && e.is_expanded(), seen);
        }
    }
    if let Some(entry) = w.downcast_ref::<gtk::Entry>()
        && shown
    {
        seen.texts.push(json!({
            "name": entry.widget_name().as_str(),
            "shown": true,
            "text": entry.text().as_str(),
        }));
        return;
    }
    let mut child = w.first_child();
    while let Some(c) = child {
        if w.downcast_ref::<gtk::Expander>().is_none() {
            walk(&c, root, shown, seen);
        }
        child = c.next_sibling();
    }
}

fn describe(root: &gtk::Widget) -> Value {
    let mut seen = Seen::default();
    walk(root, root, true, &mut seen);
    json!({
        "width": root.width(),
        "height": root.height(),
        "buttons": seen.buttons,
        "labels": seen.labels,
        "texts": seen.texts,
        "expanders": seen.expanders,
    })
}

/// How many times a screenshot is tried, 100 ms apart, before its failure is recorded: on a
/// busy machine the first frame of a page may come late.
const SHOT_TRIES: u32 = 50;

/// Screenshots `widget` into `path` once it has drawn (tried `tries` times), then records
/// the screenshot, or why there is none.
fn shoot_when_drawn(
    app: std::rc::Weak<App>,
    widget: gtk::Widget,
    path: std::path::PathBuf,
    tries: u32,
) {
    let Some(strong) = app.upgrade() else { return };
    let Some(h) = &strong.hooks else { return };
    match screenshot(&widget, &path) {
        Err(_) if tries > 1 => {
            glib::timeout_add_local_once(Duration::from_millis(100), move || {
                shoot_when_drawn(app, widget, path, tries - 1)
            });
        }
        result => h.write(json!({
            "screenshot": path.display().to_string(),
            "error": result.err(),
        })),
    }
}

/// Renders `w` as it is on screen into a PNG at `path`.
fn screenshot(w: &gtk::Widget, path: &Path) -> Result<(), String> {
    let (width, height) = (w.width(), w.height());
    if width <= 0 || height <= 0 {
        return Err("not laid out yet".into());
    }
    let paintable = gtk::WidgetPaintable::new(Some(w));
    let snapshot = gtk::Snapshot::new();
    paintable.snapshot(&snapshot, f64::from(width), f64::from(height));
    let node = snapshot.to_node().ok_or("nothing was drawn")?;
    let renderer = w.native().and_then(|n| n.renderer()).ok_or("no renderer")?;
    let texture: gdk::Texture = renderer.render_texture(
        &node,
        Some(&gtk::graphene::Rect::new(
            0.0,
            0.0,
            width as f32,
            height as f32,
        )),
    );
    texture
        .save_to_png(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Hooks {
    pub fn from_env() -> Option<Hooks> {
        let dir = std::env::var_os("RELEASE_UPGRADER_GTK_TEST_DIR")?;
        Some(Hooks {
            dir: PathBuf::from(dir),
            seq: Cell::new(0),
            last: RefCell::new(Value::Null),
            shots: RefCell::new(Vec::new()),
        })
    }

    fn write(&self, mut line: Value) {
        self.seq.set(self.seq.get() + 1);
        line["seq"] = json!(self.seq.get());
        let path = self.dir.join("state.jsonl");
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            // One write of the whole line: a reader never sees half of it.
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = result {
            eprintln!("release-upgrader-gtk: {}: {e}", path.display());
        }
    }

    fn state(app: &App) -> Value {
        let page = app.model.borrow().page.name();
        let dialog = app.ui.dialog.borrow().as_ref().map(|d| {
            let mut v = describe(d.window.upcast_ref());
            v["name"] = json!(d.window.widget_name().as_str());
            v["title"] = json!(d.window.title().map(|t| t.to_string()));
            v
        });
        let mut window = describe(app.ui.window.upcast_ref());
        window["page"] = json!(page);
        window["dialog"] = json!(dialog);
        window
    }

    /// Records the state when it changed; screenshots each new page or dialog once drawn.
    pub fn record(&self, app: &Rc<App>) {
        let state = Self::state(app);
        let mut without_bounds = state.clone();
        strip_bounds(&mut without_bounds);
        if *self.last.borrow() == without_bounds {
            return;
        }
        *self.last.borrow_mut() = without_bounds;
        let checking = matches!(app.model.borrow().check, crate::model::Check::Checking);
        let key = format!(
            "{}{}{}",
            state["page"].as_str().unwrap_or(""),
            if checking { "-checking" } else { "" },
            state["dialog"]["name"]
                .as_str()
                .map(|d| format!("-{d}"))
                .unwrap_or_default()
        );
        self.write(state);
        if !self.shots.borrow().contains(&key) {
            self.shots.borrow_mut().push(key.clone());
            self.screenshot_later(app, key);
        }
    }

    /// Screenshots once the frame is laid out and drawn.
    fn screenshot_later(&self, app: &Rc<App>, key: String) {
        let weak = Rc::downgrade(app);
        let n = self.shots.borrow().len();
        glib::timeout_add_local_once(Duration::from_millis(600), move || {
            let Some(app) = weak.upgrade() else { return };
            let Some(h) = &app.hooks else { return };
            let path = h.dir.join(format!("{n:02}-{key}.png"));
            let widget: gtk::Widget = match app.ui.dialog.borrow().as_ref() {
                Some(d) if key.ends_with("-question") => d.window.clone().upcast(),
                _ => app.ui.window.clone().upcast(),
            };
            shoot_when_drawn(weak, widget, path, SHOT_TRIES);
        });
    }

    /// Reads commands from `DIR/commands` (when it exists) for as long as the app runs.
    pub fn listen(app: &Rc<App>) {
        let Some(h) = &app.hooks else { return };
        let fifo = h.dir.join("commands");
        if !fifo.exists() {
            return;
        }
        let file = gio::File::for_path(&fifo);
        let weak = Rc::downgrade(app);
        glib::spawn_future_local(async move {
            loop {
                let stream = match file.read_future(glib::Priority::DEFAULT).await {
                    Ok(s) => s,
                    Err(e) => return eprintln!("release-upgrader-gtk: {}: {e}", fifo.display()),
                };
                let lines = gio::DataInputStream::new(&stream);
                loop {
                    match lines.read_line_utf8_future(glib::Priority::DEFAULT).await {
                        Ok(Some(line)) => {
                            let Some(app) = weak.upgrade() else { return };
                            Self::perform(&app, line.trim());
                        }
                        // The writer closed it: wait for the next one.
                        Ok(None) => break,
                        Err(e) => {
                            return eprintln!("release-upgrader-gtk: {}: {e}", fifo.display());
                        }
                    }
                }
            }
        });
    }

    fn perform(app: &Rc<App>, command: &str) {
        let Some(h) = &app.hooks else { return };
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        let result = match verb {
            "click" => Self::click(app, arg),
            "answer" => app.hook_answer(arg),
            "activate" => Self::activate(app, arg),
            "resize" => match arg.parse::<i32>() {
                Ok(width) if width > 0 => {
                    let height = app.ui.window.height().max(1);
                    app.ui.window.set_default_size(width, height);
                    // A dialog open on that screen gets no wider either.
                    if let Some(d) = app.ui.dialog.borrow().as_ref() {
                        let height = d.window.height().max(1);
                        d.window.set_default_size(width, height);
                    }
                    Self::settled(app, format!("resize-{width}"));
                    Ok(())
                }
                _ => Err(format!("not a width: {arg:?}")),
            },
            "state" => {
                Self::settled(app, "state".into());
                Ok(())
            }
            "" => Ok(()),
            _ => Err(format!("unknown command {command:?}")),
        };
        h.write(json!({"command": command, "error": result.err()}));
    }

    /// Records the state and a screenshot named `what` once the window has laid out.
    fn settled(app: &Rc<App>, what: String) {
        let weak = Rc::downgrade(app);
        glib::timeout_add_local_once(Duration::from_millis(700), move || {
            let Some(app) = weak.upgrade() else { return };
            let Some(h) = &app.hooks else { return };
            let mut state = Self::state(&app);
            state["after"] = json!(what);
            h.write(state);
            let n = h.seq.get();
            let path = h.dir.join(format!(
                "{n:02}-{}-{what}.png",
                app.model.borrow().page.name()
            ));
            let widget: gtk::Widget = match app.ui.dialog.borrow().as_ref() {
                Some(d) => d.window.clone().upcast(),
                None => app.ui.window.clone().upcast(),
            };
            shoot_when_drawn(Rc::downgrade(&app), widget, path, SHOT_TRIES);
        });
    }

    fn activate(app: &Rc<App>, name: &str) -> Result<(), String> {
        let widget = Self::roots(app)
            .iter()
            .find_map(|r| find(r, name))
            .ok_or_else(|| format!("no visible widget {name}"))?;
        if !widget.activate() {
            return Err(format!("{name} cannot be activated"));
        }
        Self::settled(app, format!("activate-{name}"));
        Ok(())
    }

    fn roots(app: &App) -> Vec<gtk::Widget> {
        let mut roots: Vec<gtk::Widget> = Vec::new();
        if let Some(d) = app.ui.dialog.borrow().as_ref() {
            roots.push(d.window.clone().upcast());
        }
        roots.push(app.ui.window.clone().upcast());
        roots
    }

    fn click(app: &App, name: &str) -> Result<(), String> {
        for root in Self::roots(app) {
            if let Some(b) = find(&root, name).and_then(|w| w.downcast::<gtk::Button>().ok()) {
                if !b.is_sensitive() {
                    return Err(format!("button {name} is not sensitive"));
                }
                b.emit_clicked();
                return Ok(());
            }
        }
        Err(format!("no visible button {name}"))
    }
}

fn strip_bounds(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("bounds");
            o.remove("width");
            o.remove("height");
            o.values_mut().for_each(strip_bounds);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_bounds),
        _ => {}
    }
}

/// The visible widget named `name` under `w`.
fn find(w: &gtk::Widget, name: &str) -> Option<gtk::Widget> {
    if !w.is_visible() || !w.is_child_visible() {
        return None;
    }
    if w.widget_name() == name {
        return Some(w.clone());
    }
    let mut child = w.first_child();
    while let Some(c) = child {
        if let Some(b) = find(&c, name) {
            return Some(b);
        }
        child = c.next_sibling();
    }
    None
}
