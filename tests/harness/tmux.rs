//! Terminal views (`top`) driven in tmux, as a user sees them.

use std::process::Command;
use std::time::Duration;

/// A terminal program run in a detached tmux session (220x50), read by capturing its pane.
pub struct Tmux(String);

impl Tmux {
    pub fn start(cmd: &str) -> Tmux {
        // Unique per session: several tests of one binary may each run one.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("scope-probe-test-{}-{n}", std::process::id());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "220", "-y", "50", cmd])
            .status()
            .expect("tmux (Debian package tmux)");
        assert!(ok.success());
        Tmux(name)
    }

    /// `scope-probe top --pid PID --interval 500ms` (and `extra` arguments), once its first
    /// table is drawn, moved on to its `view`-th view with `tab` (0: processes, 1: servers,
    /// 2: tree, 3: ETS, 4: ports, 5: memory).
    pub fn top(pid: u32, extra: &str, view: usize) -> Tmux {
        let tmux = Tmux::start(&format!("{} top --pid {pid} --interval 500ms {extra}", crate::probe::binary().display()));
        tmux.wait_for(|s| s.contains("REDS/S"));
        for _ in 0..view {
            tmux.keys("Tab");
        }
        tmux
    }

    pub fn screen(&self) -> String {
        let o = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.0]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn keys(&self, keys: &str) {
        Command::new("tmux").args(["send-keys", "-t", &self.0, keys]).status().unwrap();
    }

    /// The screen once `what` holds of it, or after 10 s as it is then.
    pub fn wait_for(&self, what: impl Fn(&str) -> bool) -> String {
        for _ in 0..50 {
            let s = self.screen();
            if what(&s) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.screen()
    }

    /// Presses `q` and waits (5 s at most) for the program to end; whether it did.
    pub fn quit(&self) -> bool {
        self.keys("q");
        for _ in 0..25 {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        !self.alive()
    }

    pub fn alive(&self) -> bool {
        Command::new("tmux").args(["has-session", "-t", &self.0]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
    }
}
