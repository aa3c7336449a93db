//! Real X displays for the browser desktop tests: the tools they need, and a display
//! number for each agent's Xvnc, painted a solid colour once it is up.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::helpers::wait_for;

pub(super) fn require_tools() {
    require(&["Xvnc", "xsetroot", "xdotool"]);
}

pub(super) fn require(tools: &[&str]) {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
        assert!(
            found,
            "{tool} is missing (apt-get install tigervnc-standalone-server xvfb x11vnc x11-xserver-utils xdotool)"
        );
    }
}

/// An X display the agent's Xvnc creates for a browser seat.
pub(super) struct Display {
    pub(super) number: u32,
    pub(super) name: String,
}

impl Display {
    /// A display number no X server uses (nor one reserved earlier in this run).
    pub(super) fn free() -> Display {
        static NEXT: AtomicU32 = AtomicU32::new(140);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            assert!(n < 400, "no free X display number");
            if lablink::provision::local::x_display_free(n) {
                return Display {
                    number: n,
                    name: format!(":{n}"),
                };
            }
        }
    }

    /// Once the agent's Xvnc is up: a solid background and the pointer in a corner.
    pub(super) async fn paint(&self, rgb: (u8, u8, u8)) {
        let socket = format!("/tmp/.X11-unix/X{}", self.number);
        wait_for(60, &format!("Xvnc on {}", self.name), || async {
            Path::new(&socket).exists().then_some(())
        })
        .await;
        let colour = format!("#{:02x}{:02x}{:02x}", rgb.0, rgb.1, rgb.2);
        self.x(&["xsetroot", "-solid", &colour]);
        self.x(&["xdotool", "mousemove", "5", "5"]);
    }

    /// Runs an X client on this display, to its end.
    pub(super) fn x(&self, argv: &[&str]) -> String {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .env("DISPLAY", &self.name)
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
        assert!(out.status.success(), "{argv:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(super) fn pointer(&self) -> (u32, u32) {
        let shell = self.x(&["xdotool", "getmouselocation", "--shell"]);
        let value = |key: &str| {
            shell
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {shell:?}"))
        };
        (value("X="), value("Y="))
    }
}
