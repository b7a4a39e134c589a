//! Update windows: `Mon-Fri 02:00-04:00 UTC`.
//!
//! STUB: being written. Interface: `Window::parse(&str) -> Result<Window, String>`,
//! `Window::contains(&self, chrono::DateTime<chrono::Utc>) -> bool`.

/// A parsed update window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {}

impl Window {
    /// Parses `DAYS HH:MM-HH:MM TZ`.
    pub fn parse(text: &str) -> Result<Window, String> {
        let _ = text;
        Ok(Window {})
    }
    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        let _ = at;
        true
    }
}
