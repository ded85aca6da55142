//! The portal's theme: the platform's accent colour, name and light/dark mode, from the
//! session. Served as `/portal/theme.css`, a stylesheet of CSS custom properties loaded after
//! the console's own, so no page needs an inline style (the CSP allows none). A colour reaches
//! the stylesheet only as `#rrggbb`; anything else falls back to Herald's.

use herald_proto::v1::{PortalTheme, ThemeMode};
use serde::{Deserialize, Serialize};

/// Herald's accent colour.
pub const DEFAULT_ACCENT: &str = "#3355cc";

/// A session's theme, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Theme {
    /// `#rrggbb`, lowercase; `None`: Herald's.
    pub accent: Option<String>,
    /// The portal's title; empty: "Webhooks".
    pub name: String,
    /// Forced colour scheme; `None` follows the viewer's system setting.
    pub dark: Option<bool>,
}

/// `colour` when it is `#rrggbb` (lowercased), else `None`.
pub fn valid_colour(colour: &str) -> Option<String> {
    let hex = colour.strip_prefix('#')?;
    (hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("#{}", hex.to_ascii_lowercase()))
}

impl Theme {
    /// The theme a session was opened with.
    pub fn from_proto(theme: Option<&PortalTheme>) -> Self {
        let Some(t) = theme else {
            return Self::default();
        };
        Self {
            accent: valid_colour(&t.accent_color),
            name: t.name.chars().take(64).collect(),
            dark: match ThemeMode::try_from(t.mode) {
                Ok(ThemeMode::Light) => Some(false),
                Ok(ThemeMode::Dark) => Some(true),
                _ => None,
            },
        }
    }

    /// The title of portal pages.
    pub fn title(&self) -> &str {
        if self.name.trim().is_empty() {
            "Webhooks"
        } else {
            &self.name
        }
    }

    /// The `/portal/theme.css` stylesheet.
    pub fn css(&self) -> String {
        let accent = self.accent.as_deref().unwrap_or(DEFAULT_ACCENT);
        let mut css = format!(":root {{\n  --accent: {accent};\n}}\n");
        match self.dark {
            Some(true) => css.push_str(":root {\n  color-scheme: dark;\n  --bg: var(--dark-bg);\n  --fg: var(--dark-fg);\n  --muted: var(--dark-muted);\n  --card: var(--dark-card);\n  --line: var(--dark-line);\n  --ok: #4ac26b;\n  --bad: #ff7b72;\n  --warn: #d29922;\n  --wait: #a3aab8;\n}\n"),
            Some(false) => css.push_str(":root {\n  color-scheme: light;\n  --bg: var(--light-bg);\n  --fg: var(--light-fg);\n  --muted: var(--light-muted);\n  --card: var(--light-card);\n  --line: var(--light-line);\n  --ok: #1a7f37;\n  --bad: #c62828;\n  --warn: #9a6700;\n  --wait: #5b6270;\n}\n"),
            None => {}
        }
        css
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_six_digit_hex_colours_are_accepted() {
        assert_eq!(valid_colour("#FF8800").as_deref(), Some("#ff8800"));
        assert_eq!(valid_colour("#0a0b0c").as_deref(), Some("#0a0b0c"));
        for bad in [
            "",
            "#",
            "#fff",
            "ff8800",
            "#ff88001",
            "#gg0000",
            "red",
            "#ff0000; } body { display: none",
            "#ff000\n",
            "var(--x)",
        ] {
            assert_eq!(valid_colour(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_invalid_accent_falls_back_to_heralds_and_never_reaches_the_css() {
        let t = Theme::from_proto(Some(&PortalTheme {
            accent_color: "red;}*{background:url(x)".into(),
            name: "Acme".into(),
            mode: ThemeMode::Dark as i32,
        }));
        assert_eq!(t.accent, None);
        let css = t.css();
        assert!(
            css.contains(&format!("--accent: {DEFAULT_ACCENT};")),
            "{css}"
        );
        assert!(!css.contains("url("), "{css}");
        assert!(css.contains("color-scheme: dark"), "{css}");
    }

    #[test]
    fn a_valid_theme_sets_the_accent_and_mode() {
        let t = Theme::from_proto(Some(&PortalTheme {
            accent_color: "#12AB34".into(),
            name: String::new(),
            mode: ThemeMode::Light as i32,
        }));
        assert_eq!(t.title(), "Webhooks");
        let css = t.css();
        assert!(css.contains("--accent: #12ab34;"), "{css}");
        assert!(css.contains("color-scheme: light"), "{css}");
        let system = Theme::from_proto(None).css();
        assert!(!system.contains("color-scheme"), "{system}");
    }
}
