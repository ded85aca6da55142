//! The page shell shared by every page: the stylesheets, a skip link, the area's navigation
//! and the logout form. Every tenant or receiver string is put into pages through maud's
//! `(…)` splices, which escape it; `PreEscaped` is used only for markup the console itself
//! produced.

use maud::{DOCTYPE, Markup, html};

/// The console's stylesheet (served at [`CSS_PATH`]).
pub const CSS: &str = include_str!("assets/console.css");
/// Where the stylesheet is served; versioned so a new build is never mixed with a cached one.
pub const CSS_PATH: &str = concat!("/assets/console-", env!("CARGO_PKG_VERSION"), ".css");

/// What surrounds a page's content.
pub struct Chrome<'a> {
    /// The title in the header (the portal's theme name, or "Herald console").
    pub brand: &'a str,
    /// Link `/portal/theme.css` after the console's stylesheet.
    pub theme_css: bool,
    /// Navigation links: path and label.
    pub nav: Vec<(&'static str, &'static str)>,
    /// The nav path of this page (marked `aria-current`).
    pub current: &'a str,
    /// The logout form's action and CSRF token, when logged in.
    pub logout: Option<(&'static str, String)>,
}

/// The hidden CSRF field of a form.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name=(crate::csrf::FIELD) value=(token); }
}

/// A page with the area's header and navigation.
pub fn page(chrome: &Chrome<'_>, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · " (chrome.brand) }
                link rel="stylesheet" href=(CSS_PATH);
                @if chrome.theme_css { link rel="stylesheet" href="/portal/theme.css"; }
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" data-testid="brand" { (chrome.brand) }
                    nav aria-label="Main" {
                        ul {
                            @for (href, label) in &chrome.nav {
                                li {
                                    @if *href == chrome.current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some((action, csrf)) = &chrome.logout {
                        form method="post" action=(action) class="logout" {
                            (csrf_field(csrf))
                            button type="submit" id="logout" { "Log out" }
                        }
                    }
                }
                main id="main" tabindex="-1" { (content) }
            }
        }
    }
}

/// A page without navigation (errors, login, opening a link).
pub fn bare(title: &str, content: Markup) -> Markup {
    let chrome = Chrome {
        brand: "Herald",
        theme_css: false,
        nav: Vec::new(),
        current: "",
        logout: None,
    };
    page(&chrome, title, content)
}
