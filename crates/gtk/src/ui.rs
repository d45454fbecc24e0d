//! The window: four pages in a stack (start, progress, the plan asking to start, end)
//! and a modal dialog per other question. [`App::send`] folds an event into the model and redraws from it, so what is
//! on screen is always a function of the model (`model.rs`), whatever order the signals
//! and replies came in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use gtk::prelude::*;
use gtk::{glib, pango};

use crate::bus::{self, ReleaseUpgraderProxy};
use crate::hooks::Hooks;
use crate::model::{Check, Event, LogLine, Model, Outcome, Page, Plan, Question};
use crate::text;

fn label(css: &[&str]) -> gtk::Label {
    let l = gtk::Label::builder()
        .wrap(true)
        .wrap_mode(pango::WrapMode::WordChar)
        .xalign(0.0)
        .build();
    for c in css {
        l.add_css_class(c);
    }
    l
}

fn button(name: &str, mnemonic: &str) -> gtk::Button {
    let b = gtk::Button::with_mnemonic(mnemonic);
    b.set_widget_name(name);
    b
}

fn text_view(name: &str, monospace: bool) -> gtk::TextView {
    let v = gtk::TextView::builder()
        .editable(false)
        .cursor_visible(false)
        .wrap_mode(gtk::WrapMode::WordChar)
        .monospace(monospace)
        .left_margin(6)
        .right_margin(6)
        .top_margin(6)
        .bottom_margin(6)
        .build();
    v.set_widget_name(name);
    v
}

fn scrolled(child: &impl IsA<gtk::Widget>, min_height: i32) -> gtk::ScrolledWindow {
    let s = gtk::ScrolledWindow::builder()
        .child(child)
        .hscrollbar_policy(gtk::PolicyType::Never)
        .min_content_height(min_height)
        .vexpand(true)
        .build();
    s.add_css_class("frame");
    s
}

fn page() -> gtk::Box {
    gtk::Box::builder()
        .orientation(gtk::Orientation::Vertical)
        .spacing(12)
        .margin_top(18)
        .margin_bottom(18)
        .margin_start(18)
        .margin_end(18)
        .build()
}

fn button_row(buttons: &[&gtk::Button]) -> gtk::Box {
    let row = gtk::Box::builder()
        .orientation(gtk::Orientation::Horizontal)
        .spacing(6)
        .halign(gtk::Align::End)
        .build();
    for b in buttons {
        row.append(*b);
    }
    row
}

fn set_text(view: &gtk::TextView, text: &str) {
    let buffer = view.buffer();
    let (start, end) = buffer.bounds();
    if buffer.text(&start, &end, false) != text {
        buffer.set_text(text);
    }
}

fn set_label(l: &gtk::Label, text: Option<&str>) {
    l.set_visible(text.is_some_and(|t| !t.is_empty()));
    if let Some(t) = text
        && l.label() != t
    {
        l.set_label(t);
    }
}

/// The open question's dialog.
pub struct Dialog {
    pub id: u32,
    pub window: gtk::Window,
    error: gtk::Label,
    entry: Option<gtk::Entry>,
    /// Each button and the answer it gives.
    choices: Vec<(String, gtk::Button)>,
}

pub struct Ui {
    pub window: gtk::ApplicationWindow,
    stack: gtk::Stack,
    start_current: gtk::Label,
    start_status: gtk::Label,
    start_explained: gtk::Label,
    notes_title: gtk::Label,
    notes_scroll: gtk::ScrolledWindow,
    notes: gtk::TextView,
    start_error: gtk::Label,
    upgrade: gtk::Button,
    phase: gtk::Label,
    bar: gtk::ProgressBar,
    status: gtk::Label,
    item: gtk::Label,
    notice: gtk::Label,
    log: gtk::TextView,
    log_shown: Cell<usize>,
    cancel: gtk::Button,
    plan_heading: gtk::Label,
    plan_counts: [gtk::Label; 4],
    plan_kept: gtk::Label,
    plan_removed: gtk::Expander,
    plan_removed_list: gtk::TextView,
    plan_error: gtk::Label,
    plan_cancel: gtk::Button,
    plan_start: gtk::Button,
    end_heading: gtk::Label,
    end_body: gtk::Label,
    end_message: gtk::Label,
    end_hint: gtk::Label,
    restart_error: gtk::Label,
    later: gtk::Button,
    restart: gtk::Button,
    end_close: gtk::Button,
    pub dialog: RefCell<Option<Dialog>>,
}

pub struct App {
    pub model: RefCell<Model>,
    pub ui: Ui,
    proxy: RefCell<Option<ReleaseUpgraderProxy<'static>>>,
    pub hooks: Option<Hooks>,
    shown_page: Cell<Option<Page>>,
}

impl App {
    pub fn new(application: &gtk::Application, hooks: Option<Hooks>) -> Rc<App> {
        let window = gtk::ApplicationWindow::builder()
            .application(application)
            .title(text::window_title())
            .default_width(640)
            .default_height(560)
            .build();
        let stack = gtk::Stack::builder()
            .transition_type(gtk::StackTransitionType::Crossfade)
            .build();

        // Start.
        let start = page();
        let heading = label(&["title-2"]);
        heading.set_label(&text::start_heading());
        let start_current = label(&[]);
        start_current.set_widget_name("current");
        let start_status = label(&["heading"]);
        let start_explained = label(&[]);
        start_explained.set_label(&text::available_explained());
        let notes_title = label(&["heading"]);
        notes_title.set_label(&text::release_notes());
        let notes = text_view("notes", false);
        let notes_scroll = scrolled(&notes, 120);
        let start_error = label(&["error"]);
        start_error.set_selectable(true);
        let close = button("close", &text::button_close());
        let upgrade = button("upgrade", &text::button_upgrade());
        upgrade.add_css_class("suggested-action");
        for w in [
            heading.upcast_ref::<gtk::Widget>(),
            start_current.upcast_ref(),
            start_status.upcast_ref(),
            start_explained.upcast_ref(),
            notes_title.upcast_ref(),
            notes_scroll.upcast_ref(),
            start_error.upcast_ref(),
        ] {
            start.append(w);
        }
        // Keeps the buttons at the bottom when there are no notes.
        let filler = gtk::Box::builder().vexpand(true).build();
        start.append(&filler);
        start.append(&button_row(&[&close, &upgrade]));
        stack.add_named(&start, Some(Page::Start.name()));

        // Progress.
        let progress = page();
        let phase = label(&["title-2"]);
        let bar = gtk::ProgressBar::builder().show_text(true).build();
        let status = label(&[]);
        let item = label(&["dim-label"]);
        item.set_ellipsize(pango::EllipsizeMode::Middle);
        item.set_wrap(false);
        let notice = label(&["warning"]);
        let log = text_view("log", true);
        let expander = gtk::Expander::with_mnemonic(&text::details());
        expander.set_widget_name("details");
        expander.set_child(Some(&scrolled(&log, 160)));
        expander.set_vexpand(true);
        expander.set_valign(gtk::Align::Start);
        let cancel = button("cancel", &text::button_cancel());
        for w in [
            phase.upcast_ref::<gtk::Widget>(),
            bar.upcast_ref(),
            status.upcast_ref(),
            item.upcast_ref(),
            notice.upcast_ref(),
            expander.upcast_ref(),
        ] {
            progress.append(w);
        }
        progress.append(&button_row(&[&cancel]));
        stack.add_named(&progress, Some(Page::Progress.name()));

        // The plan, asking to start.
        let plan = page();
        let plan_heading = label(&["title-2"]);
        let plan_counts = [(); 4].map(|_| label(&[]));
        let plan_kept = label(&["dim-label"]);
        let plan_explained = label(&[]);
        plan_explained.set_label(&text::plan_explained());
        let plan_removed_list = text_view("removed", false);
        let plan_removed = gtk::Expander::with_mnemonic(&text::plan_removed());
        plan_removed.set_widget_name("removed");
        plan_removed.set_child(Some(&scrolled(&plan_removed_list, 100)));
        plan_removed.set_vexpand(true);
        plan_removed.set_valign(gtk::Align::Start);
        let plan_error = label(&["error"]);
        let plan_cancel = button("plan-cancel", &text::button_cancel());
        let plan_start = button("start", &text::button_start());
        plan_start.add_css_class("suggested-action");
        plan.append(&plan_heading);
        for l in &plan_counts {
            plan.append(l);
        }
        for w in [
            plan_kept.upcast_ref::<gtk::Widget>(),
            plan_explained.upcast_ref(),
            plan_removed.upcast_ref(),
            plan_error.upcast_ref(),
        ] {
            plan.append(w);
        }
        plan.append(&gtk::Box::builder().vexpand(true).build());
        plan.append(&button_row(&[&plan_cancel, &plan_start]));
        stack.add_named(&plan, Some(Page::Plan.name()));

        // End.
        let end = page();
        let end_heading = label(&["title-2"]);
        let end_body = label(&[]);
        let end_message = label(&["monospace"]);
        end_message.set_selectable(true);
        let end_hint = label(&[]);
        let restart_error = label(&["error"]);
        let later = button("later", &text::button_later());
        let restart = button("restart", &text::button_restart());
        restart.add_css_class("suggested-action");
        let end_close = button("close", &text::button_close());
        for w in [
            end_heading.upcast_ref::<gtk::Widget>(),
            end_body.upcast_ref(),
            end_message.upcast_ref(),
            end_hint.upcast_ref(),
            restart_error.upcast_ref(),
        ] {
            end.append(w);
        }
        end.append(&gtk::Box::builder().vexpand(true).build());
        end.append(&button_row(&[&later, &restart, &end_close]));
        stack.add_named(&end, Some(Page::End.name()));

        window.set_child(Some(&stack));

        let app = Rc::new(App {
            model: RefCell::new(Model::default()),
            ui: Ui {
                window,
                stack,
                start_current,
                start_status,
                start_explained,
                notes_title,
                notes_scroll,
                notes,
                start_error,
                upgrade,
                phase,
                bar,
                status,
                item,
                notice,
                log,
                log_shown: Cell::new(0),
                cancel,
                plan_heading,
                plan_counts,
                plan_kept,
                plan_removed,
                plan_removed_list,
                plan_error,
                plan_cancel,
                plan_start,
                end_heading,
                end_body,
                end_message,
                end_hint,
                restart_error,
                later,
                restart,
                end_close,
                dialog: RefCell::new(None),
            },
            proxy: RefCell::new(None),
            hooks,
            shown_page: Cell::new(None),
        });

        let weak = Rc::downgrade(&app);
        let on = move |b: &gtk::Button, f: fn(&Rc<App>)| {
            let weak = weak.clone();
            b.connect_clicked(move |_| {
                if let Some(app) = weak.upgrade() {
                    f(&app);
                }
            });
        };
        on(&app.ui.upgrade, App::upgrade);
        on(&app.ui.cancel, App::cancel);
        on(&app.ui.restart, App::restart);
        on(&app.ui.plan_start, |app| app.answer_start("Y"));
        on(&app.ui.plan_cancel, |app| app.answer_start("N"));
        for b in [&close, &app.ui.later, &app.ui.end_close] {
            on(b, |app| app.ui.window.close());
        }
        app.render();
        app
    }

    /// Connects to the service, follows its signals, then asks for the new release.
    pub fn start(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        glib::spawn_future_local(async move {
            let sink = sink(&weak);
            let proxy = match bus::connect().await {
                Ok(p) => p,
                Err(e) => return sink(Event::Unreachable(bus::describe(&e))),
            };
            if let Err(e) = bus::follow(&proxy, sink.clone()).await {
                return sink(Event::Unreachable(bus::describe(&e)));
            }
            if let Some(app) = weak.upgrade() {
                *app.proxy.borrow_mut() = Some(proxy.clone());
            }
            if let Ok(current) = proxy.current_release().await {
                sink(Event::Current(current));
            }
            if let Err(e) = proxy.check_release().await {
                sink(Event::Unreachable(bus::describe(&e)));
            }
        });
    }

    pub fn send(self: &Rc<Self>, event: Event) {
        self.model.borrow_mut().apply(event);
        self.render();
    }

    fn call<F, Fut>(self: &Rc<Self>, f: F)
    where
        F: FnOnce(ReleaseUpgraderProxy<'static>, Box<dyn Fn(Event)>) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let Some(proxy) = self.proxy.borrow().clone() else {
            return;
        };
        let s: Box<dyn Fn(Event)> = Box::new(sink(&Rc::downgrade(self)));
        glib::spawn_future_local(f(proxy, s));
    }

    fn upgrade(self: &Rc<Self>) {
        if !self.model.borrow().can_upgrade() {
            return;
        }
        self.send(Event::UpgradeAsked);
        self.call(|proxy, sink| async move {
            // The plan is shown before anything is downloaded: the person confirms it.
            let options = HashMap::from([("confirm", zbus::zvariant::Value::from(true))]);
            if let Err(e) = proxy.upgrade(options).await {
                sink(Event::UpgradeRefused(text::upgrade_refused(
                    &bus::describe(&e),
                )));
            }
        });
    }

    fn cancel(self: &Rc<Self>) {
        if !self.model.borrow().can_cancel() {
            return;
        }
        self.send(Event::CancelAsked);
        self.call(|proxy, sink| async move {
            if let Err(e) = proxy.cancel().await {
                sink(
                    if bus::error_name(&e)
                        == Some("org.releaseupgrader.ReleaseUpgrader1.Error.TooLate")
                    {
                        Event::CancelTooLate
                    } else {
                        Event::CancelRefused(bus::describe(&e))
                    },
                );
            }
        });
    }

    /// The plan page's buttons: `Y` starts the upgrade, `N` declines it (everything is
    /// put back).
    fn answer_start(self: &Rc<Self>, answer: &str) {
        let id = {
            let m = self.model.borrow();
            match &m.question {
                Some(q) if q.is_start() && !m.answering => q.id,
                _ => return,
            }
        };
        self.answer(id, answer.to_owned());
    }

    pub fn answer(self: &Rc<Self>, id: u32, answer: String) {
        self.send(Event::Answering);
        self.call(move |proxy, sink| async move {
            match proxy.answer(id, &answer).await {
                Ok(()) => sink(Event::Answered(id)),
                Err(e) => sink(Event::AnswerRefused(text::answer_refused(&bus::describe(
                    &e,
                )))),
            }
        });
    }

    fn restart(self: &Rc<Self>) {
        self.send(Event::RestartAsked);
        let s = sink(&Rc::downgrade(self));
        glib::spawn_future_local(async move {
            if let Err(e) = bus::reboot().await {
                s(Event::RestartRefused(text::restart_failed(&bus::describe(
                    &e,
                ))));
            }
        });
    }

    /// For the test hooks: answers the open question as its button or entry would.
    pub fn hook_answer(&self, answer: &str) -> Result<(), String> {
        let dialog = self.ui.dialog.borrow();
        let d = dialog.as_ref().ok_or("no question is open")?;
        if let Some((_, b)) = d.choices.iter().find(|(c, _)| c == answer) {
            let b = b.clone();
            drop(dialog);
            b.emit_clicked();
            return Ok(());
        }
        let entry = d
            .entry
            .as_ref()
            .ok_or_else(|| format!("no button answers {answer:?}"))?;
        entry.set_text(answer);
        let ok = d.choices.first().map(|(_, b)| b.clone()).ok_or("no OK")?;
        drop(dialog);
        ok.emit_clicked();
        Ok(())
    }

    fn render(self: &Rc<Self>) {
        let m = self.model.borrow();
        let ui = &self.ui;
        let page = m.page;
        ui.stack.set_visible_child_name(page.name());

        // Start.
        let (status, available) = match &m.check {
            Check::Checking => (text::checking(), None),
            Check::Available { version, codename } => {
                (text::available(version, codename), Some(()))
            }
            Check::None { reason } => (text::none_available(reason), None),
            Check::Unreachable(e) => (text::service_unreachable(e), None),
        };
        let current = (!m.current.is_empty()).then(|| text::running(&m.current));
        set_label(&ui.start_current, current.as_deref());
        set_label(&ui.start_status, Some(&status));
        ui.start_explained.set_visible(available.is_some());
        ui.notes_title.set_visible(available.is_some());
        ui.notes_scroll.set_visible(available.is_some());
        set_text(
            &ui.notes,
            if m.notes.trim().is_empty() {
                text::no_release_notes()
            } else {
                m.notes.clone()
            }
            .as_str(),
        );
        set_label(&ui.start_error, m.start_error.as_deref());
        ui.upgrade.set_sensitive(m.can_upgrade());

        // Progress.
        set_label(
            &ui.phase,
            Some(&m.phase.as_deref().map_or_else(text::starting, text::phase)),
        );
        ui.bar.set_fraction(m.percent / 100.0);
        let status = if m.cancelling {
            text::cancelling()
        } else {
            m.label.clone()
        };
        set_label(&ui.status, Some(&status));
        set_label(&ui.item, Some(&m.item));
        set_label(&ui.notice, m.notice.as_deref());
        ui.cancel.set_sensitive(m.can_cancel());
        let buffer = ui.log.buffer();
        for line in &m.log[ui.log_shown.get().min(m.log.len())..] {
            let line = match line {
                LogLine::PhaseStarted(p) => text::phase_started(&text::phase(p)),
                LogLine::PhaseDone(p) => text::phase_done(&text::phase(p)),
                LogLine::PhaseFailed(p) => text::phase_failed(&text::phase(p)),
                LogLine::Message(t) => t.clone(),
            };
            buffer.insert(&mut buffer.end_iter(), &format!("{line}\n"));
        }
        ui.log_shown.set(m.log.len());

        // The plan.
        let (version, codename) = match &m.check {
            Check::Available { version, codename } => (version.as_str(), codename.as_str()),
            _ => ("", ""),
        };
        set_label(
            &ui.plan_heading,
            Some(&text::plan_heading(version, codename)),
        );
        render_plan(ui, m.plan.as_ref());
        let on_plan = page == Page::Plan;
        set_label(
            &ui.plan_error,
            on_plan.then_some(m.question_error.as_deref()).flatten(),
        );
        ui.plan_start
            .set_sensitive(!m.answering && m.plan.is_some());
        ui.plan_cancel.set_sensitive(!m.answering);

        // End.
        let mut reboot = false;
        match &m.outcome {
            Some(Outcome::Upgraded { reboot_required }) => {
                reboot = *reboot_required;
                let (version, codename) = match &m.check {
                    Check::Available { version, codename } => (version.as_str(), codename.as_str()),
                    _ => ("", ""),
                };
                set_label(&ui.end_heading, Some(&text::upgraded(version, codename)));
                let body = if m.restarting {
                    text::restarting()
                } else if reboot {
                    text::restart_needed()
                } else {
                    text::no_restart_needed()
                };
                set_label(&ui.end_body, Some(&body));
                set_label(&ui.end_message, None);
                set_label(&ui.end_hint, None);
            }
            Some(Outcome::Cancelled) => {
                set_label(&ui.end_heading, Some(&text::cancelled()));
                set_label(&ui.end_body, Some(&text::cancelled_explained()));
                set_label(&ui.end_message, None);
                set_label(&ui.end_hint, None);
            }
            Some(Outcome::Failed { code, message }) => {
                set_label(&ui.end_heading, Some(&text::failed()));
                set_label(&ui.end_body, Some(&text::failed_code(&code.to_string())));
                set_label(&ui.end_message, Some(message));
                set_label(&ui.end_hint, Some(&text::failed_hint()));
            }
            None => {}
        }
        set_label(&ui.restart_error, m.restart_error.as_deref());
        ui.restart.set_visible(reboot);
        ui.restart.set_sensitive(!m.restarting);
        ui.later.set_visible(reboot);
        ui.end_close.set_visible(!reboot);

        // The default (Enter) and the focus follow the page.
        if self.shown_page.get() != Some(page) {
            self.shown_page.set(Some(page));
            let default = match page {
                Page::Start => Some(&ui.upgrade),
                Page::Progress => None,
                Page::Plan => Some(&ui.plan_start),
                Page::End if reboot => Some(&ui.restart),
                Page::End => Some(&ui.end_close),
            };
            ui.window.set_default_widget(default);
            if let Some(b) = default {
                b.grab_focus();
            }
        }
        // The start question is the plan page's, not a dialog's.
        let question = m.question.clone().filter(|q| !q.is_start());
        let error = m.question_error.clone();
        drop(m);
        self.render_dialog(question, error);
        if let Some(h) = &self.hooks {
            h.record(self);
        }
    }

    fn render_dialog(self: &Rc<Self>, question: Option<Question>, error: Option<String>) {
        let open = self.ui.dialog.borrow().as_ref().map(|d| d.id);
        if open != question.as_ref().map(|q| q.id)
            && let Some(d) = self.ui.dialog.borrow_mut().take()
        {
            d.window.destroy();
        }
        if let Some(q) = question {
            if self.ui.dialog.borrow().is_none() {
                let d = self.dialog(&q);
                d.window.present();
                *self.ui.dialog.borrow_mut() = Some(d);
            }
            if let Some(d) = self.ui.dialog.borrow().as_ref() {
                // A refused answer may be given again.
                if error.is_some() {
                    for (_, b) in &d.choices {
                        b.set_sensitive(true);
                    }
                }
                set_label(&d.error, error.as_deref());
            }
        }
    }

    fn dialog(self: &Rc<Self>, q: &Question) -> Dialog {
        let conffile = q.is_conffile();
        let window = gtk::Window::builder()
            .transient_for(&self.ui.window)
            .modal(true)
            .title(if conffile {
                text::conffile_title()
            } else {
                text::question_title()
            })
            .default_width(600)
            .build();
        window.set_widget_name("question");
        let body = page();
        let (heading, explained) = if conffile {
            (
                text::conffile_heading(&q.path),
                text::conffile_explained(&q.package),
            )
        } else {
            (q.package.clone(), String::new())
        };
        let h = label(&["title-3"]);
        set_label(&h, Some(&heading));
        body.append(&h);
        let e = label(&[]);
        set_label(&e, Some(&explained));
        body.append(&e);
        let t = label(&[]);
        t.set_selectable(true);
        set_label(&t, Some(if conffile { "" } else { &q.text }));
        body.append(&t);
        let mut choices = Vec::new();
        let mut entry = None;
        let default;
        if conffile {
            let diff = text_view("diff", true);
            diff.set_wrap_mode(gtk::WrapMode::None);
            set_text(&diff, &q.details);
            let scroll = scrolled(&diff, 240);
            scroll.set_hscrollbar_policy(gtk::PolicyType::Automatic);
            let expander = gtk::Expander::with_mnemonic(&text::show_differences());
            expander.set_widget_name("differences");
            expander.set_child(Some(&scroll));
            expander.set_vexpand(true);
            expander.set_valign(gtk::Align::Start);
            body.append(&expander);
            let install = button("install", &text::install_theirs());
            let keep = button("keep", &text::keep_yours());
            keep.add_css_class("suggested-action");
            choices.push(("N".to_owned(), keep.clone()));
            choices.push(("Y".to_owned(), install.clone()));
            default = keep.clone();
            // One above the other, the default last, as wide as the wider: side by side
            // they need ~480 px, more than a phone's screen.
            let column = gtk::Box::builder()
                .orientation(gtk::Orientation::Vertical)
                .spacing(6)
                .homogeneous(true)
                .halign(gtk::Align::End)
                .build();
            column.append(&install);
            column.append(&keep);
            body.append(&column);
        } else if q.is_yes_no() {
            let no = button("no", &text::button_no());
            let yes = button("yes", &text::button_yes());
            // The safe answer is the default, as on the terminal ([y/N]).
            no.add_css_class("suggested-action");
            choices.push(("N".to_owned(), no.clone()));
            choices.push(("Y".to_owned(), yes.clone()));
            default = no.clone();
            body.append(&button_row(&[&yes, &no]));
        } else {
            if !q.choices.is_empty() {
                let c = label(&["dim-label"]);
                set_label(&c, Some(&text::choices(&q.choices.join(", "))));
                body.append(&c);
            }
            let en = gtk::Entry::builder()
                .text(q.default.as_str())
                .activates_default(true)
                .build();
            en.set_widget_name("entry");
            body.append(&en);
            let ok = button("ok", &text::button_ok());
            ok.add_css_class("suggested-action");
            choices.push((String::new(), ok.clone()));
            default = ok.clone();
            body.append(&button_row(&[&ok]));
            entry = Some(en);
        }
        let error = label(&["error"]);
        error.set_visible(false);
        body.append(&error);
        window.set_child(Some(&body));
        window.set_default_widget(Some(&default));
        default.grab_focus();

        let id = q.id;
        for (choice, b) in &choices {
            let weak = Rc::downgrade(self);
            let (choice, entry) = (choice.clone(), entry.clone());
            b.connect_clicked(move |b| {
                let Some(app) = weak.upgrade() else { return };
                let answer = match &entry {
                    Some(e) => e.text().to_string(),
                    None => choice.clone(),
                };
                b.set_sensitive(false);
                app.answer(id, answer);
            });
        }
        // Closing the dialog is the question's default: for a conffile, keep yours.
        let weak = Rc::downgrade(self);
        let answer = q.default.clone();
        window.connect_close_request(move |_| {
            if let Some(app) = weak.upgrade() {
                app.answer(id, answer.clone());
            }
            glib::Propagation::Stop
        });
        Dialog {
            id,
            window,
            error,
            entry,
            choices,
        }
    }
}

/// The plan's numbers (or that they are being worked out) and the names removed.
fn render_plan(ui: &Ui, plan: Option<&Plan>) {
    let Some(p) = plan else {
        set_label(&ui.plan_counts[0], Some(&text::plan_waiting()));
        for l in &ui.plan_counts[1..] {
            set_label(l, None);
        }
        set_label(&ui.plan_kept, None);
        ui.plan_removed.set_visible(false);
        return;
    };
    let size = glib::format_size(p.download_bytes);
    let counts = [
        text::plan_upgrades(p.upgrades),
        text::plan_installs(p.installs),
        text::plan_removals(p.removals),
        text::plan_download(size.as_str()),
    ];
    for (l, t) in ui.plan_counts.iter().zip(counts) {
        set_label(l, Some(&t));
    }
    let kept = (!p.kept_back.is_empty()).then(|| text::plan_kept_back(&p.kept_back.join(" ")));
    set_label(&ui.plan_kept, kept.as_deref());
    ui.plan_removed.set_visible(!p.removed.is_empty());
    set_text(&ui.plan_removed_list, &p.removed.join("\n"));
}

/// Hands events to the app on the main context, once it is gone, nowhere.
fn sink(weak: &Weak<App>) -> impl Fn(Event) + Clone + 'static {
    let weak = weak.clone();
    move |e| {
        if let Some(app) = weak.upgrade() {
            app.send(e);
        }
    }
}
