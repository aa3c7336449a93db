//! The documentation site (docs/, built by `scripts/book.sh`): its generated reference
//! pages match what the program prints, and every page is in the book.

use std::path::Path;

use lablink::server::api::openapi::{DOCUMENT, markdown};

use super::helpers::{Auth, TestServer, run_binary, succeeded};

const CONFIGURATION_PAGE: &str = include_str!("../../docs/reference/configuration.md");
const API_PAGE: &str = include_str!("../../docs/reference/api.md");
const SUMMARY: &str = include_str!("../../docs/SUMMARY.md");

#[test]
fn configuration_reference_page_is_the_generated_one() {
    assert!(
        CONFIGURATION_PAGE == lablink::config::Config::reference(),
        "docs/reference/configuration.md is stale: regenerate it with \
         `cargo run -q -- config reference > docs/reference/configuration.md`"
    );
}

#[test]
fn api_reference_page_is_the_generated_one() {
    let generated = markdown::render_text(DOCUMENT).expect("the OpenAPI document is JSON");
    assert!(
        API_PAGE == generated,
        "docs/reference/api.md is stale: regenerate it with \
         `cargo run -q -- openapi --markdown > docs/reference/api.md`"
    );
}

/// `lablink openapi` prints exactly what the allocator serves; `--markdown` the API page.
#[tokio::test]
async fn openapi_command_prints_the_served_document_and_the_api_page() {
    let server = TestServer::start().await;
    let served = server.get("/api/openapi.json", Auth::None).await;
    assert_eq!(served.status.as_u16(), 200);

    let printed = succeeded(&run_binary(&["openapi"], &[], 30).await);
    assert!(
        printed == served.text,
        "`lablink openapi` differs from GET /api/openapi.json"
    );

    let page = succeeded(&run_binary(&["openapi", "--markdown"], &[], 30).await);
    assert!(
        page == API_PAGE,
        "`lablink openapi --markdown` differs from docs/reference/api.md"
    );
}

/// Every Markdown file of docs/ is a chapter of SUMMARY.md (mdBook leaves out the others
/// silently), and every chapter exists.
#[test]
fn every_page_of_docs_is_in_the_book() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let chapters: Vec<&str> = SUMMARY
        .lines()
        .filter_map(|line| {
            let start = line.find("](")? + 2;
            let rest = &line[start..];
            Some(&rest[..rest.find(')')?])
        })
        .collect();
    for chapter in &chapters {
        assert!(
            docs.join(chapter).is_file(),
            "docs/SUMMARY.md names {chapter}, which is not in docs/"
        );
    }
    let mut pages = Vec::new();
    let mut folders = vec![docs.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read docs/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let page = path.strip_prefix(&docs).expect("under docs/");
                pages.push(page.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    pages.retain(|p| p != "SUMMARY.md");
    pages.sort();
    let missing: Vec<&String> = pages
        .iter()
        .filter(|p| !chapters.contains(&p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "pages of docs/ missing from docs/SUMMARY.md (the book would leave them out): {missing:?}"
    );
    for page in [
        "reference/configuration.md",
        "reference/api.md",
        "architecture.md",
    ] {
        assert!(pages.contains(&page.to_owned()), "{page}");
    }
    // The architecture chapter is the repository's ARCHITECTURE.md itself, not a copy.
    let architecture = std::fs::read_to_string(docs.join("architecture.md")).expect("read");
    assert_eq!(architecture.trim(), "{{#include ../ARCHITECTURE.md}}");
}
