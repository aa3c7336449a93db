//! One error shape per boundary: the JSON API answers every refusal, a rejected path,
//! query string or body included, as JSON naming what to fix; the admin pages answer an
//! HTML page, or to htmx the message fragment.

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use super::helpers::{ADMIN_PASSWORD, ADMIN_USER, Answer, Auth, TestServer, within};

async fn admin(
    s: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Answer {
    let mut req = s
        .client
        .request(method, s.url(path))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some((content_type, body)) = body {
        req = req.header(CONTENT_TYPE, content_type).body(body.to_owned());
    }
    Answer::read(req.send().await.expect("request")).await
}

/// The `{"error": …}` message of a JSON refusal with this status.
fn api_error(a: &Answer, status: u16) -> String {
    let body = a.expect(status);
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {body}"));
    assert_eq!(body, json!({ "error": message }), "exactly the error");
    message.to_owned()
}

#[tokio::test]
async fn rejected_paths_queries_and_bodies_answer_json_naming_the_field() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let m = api_error(&s.get("/api/runs/0?limit=x", Auth::admin()).await, 400);
        assert!(m.contains("limit"), "{m}");
        let m = api_error(&s.get("/api/runs/0?limit=0", Auth::admin()).await, 400);
        assert_eq!(m, "limit must be 1 to 10000.");

        let m = api_error(&s.get("/api/runs/first", Auth::admin()).await, 400);
        assert!(m.contains("id") && m.contains("first"), "{m}");

        // The console's event streams too.
        let m = api_error(&s.get("/admin/runs/first/events", Auth::admin()).await, 400);
        assert!(m.contains("id") && m.contains("first"), "{m}");
        let m = api_error(
            &s.get("/admin/logs/vm-1/events?container=x", Auth::admin())
                .await,
            400,
        );
        assert!(m.contains("container"), "{m}");

        // A value of the wrong type in a JSON body: the field is named.
        let a = s
            .agent_post(
                "/api/vm-status",
                &json!({"hostname": 5, "status": "running"}),
            )
            .await;
        let m = api_error(&a, 400);
        assert!(m.starts_with("Invalid JSON body: hostname: "), "{m}");
        let a = s
            .post_raw(
                "/api/vm-status",
                "application/json",
                b"{\"hostname\": ".to_vec(),
            )
            .await;
        assert!(api_error(&a, 400).starts_with("Invalid JSON body: "));

        // A form endpoint sent something else: 415, saying which content type it takes.
        let a = admin(
            &s,
            Method::POST,
            "/api/launch",
            &[],
            Some(("text/plain", "num_vms=1")),
        )
        .await;
        let m = api_error(&a, 415);
        assert!(
            m.contains("Content-Type: application/x-www-form-urlencoded"),
            "{m}"
        );
        // A field given twice cannot be read as one value.
        let form = "application/x-www-form-urlencoded";
        let a = admin(
            &s,
            Method::POST,
            "/api/launch",
            &[],
            Some((form, "num_vms=1&num_vms=2")),
        )
        .await;
        let m = api_error(&a, 400);
        assert!(m.contains("num_vms"), "{m}");

        // The schedule endpoints keep upstream's shape for these too.
        let a = admin(
            &s,
            Method::GET,
            "/api/schedule-destruction?status=a&status=b",
            &[],
            None,
        )
        .await;
        let body = a.expect(400);
        assert_eq!(body["success"], false, "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("status")),
            "{body}"
        );
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
        let a = admin(
            &s,
            Method::POST,
            "/api/schedule-destruction",
            &[],
            Some(("application/json", "[]")),
        )
        .await;
        assert_eq!(
            a.expect(400),
            json!({"success": false, "message": "A JSON object body is required."})
        );
    })
    .await;
}

/// The page's text, asserting it is a whole HTML page with this status.
fn error_page(a: &Answer, status: u16) -> &str {
    assert_eq!(a.status.as_u16(), status, "{}", a.text);
    assert!(
        a.content_type.starts_with("text/html"),
        "{}: {}",
        a.content_type,
        a.text
    );
    assert!(a.text.starts_with("<!DOCTYPE html>"), "{}", a.text);
    assert!(a.text.contains("<a href=\"/admin\">Back</a>"), "{}", a.text);
    &a.text
}

#[tokio::test]
async fn failing_admin_pages_answer_html_and_htmx_gets_the_message() {
    let s = TestServer::start().await;
    within(30, "test", async {
        let a = admin(&s, Method::GET, "/admin/logs/vm-9", &[], None).await;
        assert!(error_page(&a, 404).contains("VM not found."));
        let a = admin(&s, Method::GET, "/admin/logs/bad_name", &[], None).await;
        assert!(error_page(&a, 400).contains("(RFC 1123; no '_')"), "{}", a.text);
        let a = admin(&s, Method::GET, "/admin/runs/first", &[], None).await;
        assert!(error_page(&a, 400).contains("Invalid path parameter id"));
        let a = admin(&s, Method::GET, "/admin/runs/7", &[], None).await;
        assert!(error_page(&a, 404).contains("No run #7."));
        // A form the page cannot read.
        let a = admin(&s, Method::POST, "/admin/token/mint", &[], Some(("text/plain", "hostname=x"))).await;
        assert!(error_page(&a, 415).contains("Content-Type"));
        let form = "application/x-www-form-urlencoded";
        let a = admin(&s, Method::POST, "/admin/token/mint", &[], Some((form, "hostname=a_b"))).await;
        assert!(error_page(&a, 400).contains("Machine name: "));

        // htmx swaps the message into the console's flash box (and only a 2xx answer).
        let htmx = [("HX-Request", "true")];
        let a = admin(&s, Method::GET, "/admin/logs/vm-9", &htmx, None).await;
        assert_eq!(a.status.as_u16(), 200, "{}", a.text);
        assert!(a.content_type.starts_with("text/html"), "{}", a.content_type);
        assert_eq!(a.text, r#"<p class="error" role="alert">VM not found.</p>"#);
        let a = admin(&s, Method::POST, "/admin/instances/vm-9/release", &htmx, Some((form, "confirm=vm-8"))).await;
        assert_eq!(
            a.text,
            r#"<p class="error" role="alert">To release the seat, type the VM's name (vm-9) in the box next to the button.</p>"#
        );
        // Without htmx, the same action's problem is a page that leads back to the list.
        let a = admin(&s, Method::POST, "/admin/instances/vm-9/release", &[], Some((form, "confirm=vm-8"))).await;
        assert_eq!(a.status.as_u16(), 400, "{}", a.text);
        assert!(a.text.contains("<a href=\"/admin/instances\">Back</a>"), "{}", a.text);

        // A page that works is not touched by any of this.
        let a = admin(&s, Method::GET, "/admin/audit", &htmx, None).await;
        assert_eq!(a.status.as_u16(), 200);
        assert!(a.text.starts_with("<!DOCTYPE html>"));
    })
    .await;
}
