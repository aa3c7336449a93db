use maud::{DOCTYPE, Markup, html};

/// The page shell every page shares. Scripts are optional: pages work without them.
pub fn page(title: &str, scripts: &[&str], body: Markup) -> Markup {
    page_refreshing(title, scripts, None, body)
}

/// A page that loads `url` after `seconds` by itself (no script needed).
pub fn page_refreshing(
    title: &str,
    scripts: &[&str],
    refresh: Option<(u32, &str)>,
    body: Markup,
) -> Markup {
    shell(title, scripts, refresh, false, body)
}

/// A page whose scripts keep it current from live events: only a browser without script
/// loads `url` again after `seconds` (a reload would cut what the scripts hold open, such
/// as a desktop's stream).
pub fn page_following(
    title: &str,
    scripts: &[&str],
    refresh: Option<(u32, &str)>,
    body: Markup,
) -> Markup {
    shell(title, scripts, refresh, true, body)
}

fn shell(
    title: &str,
    scripts: &[&str],
    refresh: Option<(u32, &str)>,
    without_script: bool,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_start(&format!("{title} · LabLink")))
                @if let Some((seconds, url)) = refresh {
                    @let content = format!("{seconds}; url={url}");
                    @if without_script {
                        noscript { meta http-equiv="refresh" content=(content); }
                    } @else {
                        meta http-equiv="refresh" content=(content);
                    }
                }
                @for src in scripts {
                    script src=(src) defer {}
                }
            }
            body {
                header.top { a.brand href="/" { "LabLink" } }
                main { (body) }
            }
        }
    }
}

/// What every page's head starts with: encoding, viewport, title and the stylesheet.
pub fn head_start(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) }
        link rel="stylesheet" href="/assets/app.css";
    }
}
