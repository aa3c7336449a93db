//! A run's progress and cancelling it, driven by the fake `terraform` in `paced` mode: it
//! writes real `-json` messages and creates VM i only when the test creates `step-<i>`.

use serde_json::{Value, json};

use crate::helpers::{Auth, TestServer, wait_for, within};
use crate::terraform::{args_of, calls, control, set_mode, terraform_server};
use crate::ui::Console;

fn step(s: &TestServer, name: &str) {
    std::fs::write(control(s).join(name), "").expect("step file");
}

async fn run_of(s: &TestServer, id: u64) -> Value {
    s.get(&format!("/api/runs/{id}"), Auth::admin())
        .await
        .expect(200)
}

/// Waits until the run's `progress` is `want` and returns the run.
async fn progress_reaches(s: &TestServer, id: u64, want: Value) -> Value {
    let what = format!("progress {want}");
    wait_for(30, &what, || async {
        let body = run_of(s, id).await;
        (body["run"]["progress"] == want).then_some(body)
    })
    .await
}

async fn launch(s: &TestServer, n: &str) -> u64 {
    s.admin_form("/api/launch", &[("num_vms", n)], &[])
        .await
        .expect(202)["run_id"]
        .as_u64()
        .expect("run id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_counts_terraforms_json_messages_while_the_run_goes() {
    let s = terraform_server(60).await;
    within(60, "test", async {
        set_mode(&s, "paced");
        let id = launch(&s, "3").await;
        // Planned, nothing created yet: the fake waits for step-1.
        let body = progress_reaches(&s, id, json!({"done": 0, "total": 3, "failed": 0})).await;
        assert_eq!(body["run"]["state"], "running");
        for (i, want) in [(1, 1), (2, 2), (3, 3)] {
            step(&s, &format!("step-{i}"));
            let body =
                progress_reaches(&s, id, json!({"done": want, "total": 3, "failed": 0})).await;
            // Still going: the fake waits for `finish` after the last VM.
            assert_eq!(body["run"]["state"], "running", "{body}");
        }
        let listed = s.get("/api/runs", Auth::admin()).await.expect(200);
        assert_eq!(
            listed["runs"][0]["progress"],
            json!({"done": 3, "total": 3, "failed": 0})
        );
        step(&s, "finish");
        let (run, lines) = s.finished_run(id, 30).await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        assert_eq!(run["progress"], json!({"done": 3, "total": 3, "failed": 0}));
        assert_eq!(run["cancelled_by"], Value::Null);
        // Terraform's own words, not its JSON.
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("Creation complete after 1s")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "Plan: 3 to add, 0 to change, 0 to destroy.")
        );
        assert!(
            !lines.iter().any(|l| l.contains("\"@message\"")),
            "{lines:?}"
        );
        let apply = calls(&s)
            .iter()
            .map(args_of)
            .find(|a| a[0] == "apply")
            .expect("an apply");
        assert!(apply.contains(&"-json".to_owned()), "{apply:?}");

        // A run whose provider says nothing has no progress (the run before this field
        // existed decodes the same way); the run page shows the count and a bar.
        let page = s.get(&format!("/admin/runs/{id}"), Auth::admin()).await;
        assert!(page.text.contains("3/3"), "{}", page.text);
        assert!(page.text.contains("<progress"), "{}", page.text);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_interrupts_terraform_and_records_who() {
    let s = terraform_server(60).await;
    within(60, "test", async {
        set_mode(&s, "paced");
        let id = launch(&s, "3").await;
        step(&s, "step-1");
        progress_reaches(&s, id, json!({"done": 1, "total": 3, "failed": 0})).await;

        let answer = s
            .admin_json(
                reqwest::Method::POST,
                &format!("/api/runs/{id}/cancel"),
                None,
            )
            .await
            .expect(202);
        assert_eq!(answer["status"], "cancelling");
        assert_eq!(answer["run"]["id"], id);

        // SIGINT, not SIGKILL: the grace period is a minute, and the run ends well before.
        let (run, lines) = s.finished_run(id, 30).await;
        assert_eq!(run["state"], "cancelled", "{lines:?}");
        assert_eq!(run["cancelled_by"], "admin");
        assert!(
            control(&s).join("sigint").exists(),
            "terraform never got SIGINT"
        );
        // The VM in flight was finished: two exist, and the last line names them.
        let made: Vec<String> = serde_json::from_str(
            &std::fs::read_to_string(control(&s).join("state.json")).expect("state"),
        )
        .expect("names");
        assert_eq!(made.len(), 2, "{made:?}");
        let last = lines.last().expect("a last line");
        assert!(last.starts_with("run cancelled by admin: "), "{lines:?}");
        for name in &made {
            assert!(last.contains(name.as_str()), "{last}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l == "Interrupt received. Gracefully shutting down...")
        );

        let audit = s.recent_audit(5).await;
        let entry = audit
            .iter()
            .find(|e| e.action == "cancel-run")
            .expect("an audit entry");
        assert_eq!(entry.actor, "admin");
        assert_eq!(entry.detail, format!("run #{id} (launch 3 VM(s))"));

        // Finished runs cannot be cancelled; unknown ones are not found.
        s.admin_json(
            reqwest::Method::POST,
            &format!("/api/runs/{id}/cancel"),
            None,
        )
        .await
        .expect_error(
            409,
            &format!("run #{id} (launch 3 VM(s)) has already finished: cancelled"),
        );
        s.admin_json(reqwest::Method::POST, "/api/runs/999/cancel", None)
            .await
            .expect_error(404, "No run #999.");
        // Only an admin may.
        let anonymous = s
            .post_json(&format!("/api/runs/{id}/cancel"), &json!({}), None)
            .await;
        assert_eq!(anonymous.status, 401);
        // The VMs created so far can be destroyed as usual.
        set_mode(&s, "succeed");
        let destroy = s.admin_form("/destroy", &[], &[]).await.expect(202)["run_id"]
            .as_u64()
            .expect("id");
        let (run, lines) = s.finished_run(destroy, 30).await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        assert_eq!(run["progress"], json!({"done": 2, "total": 2, "failed": 0}));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_provider_counts_the_vms_it_starts() {
    let s = TestServer::start_with(|c| {
        c.provision.provider = "local".into();
        c.provision.local_executable = env!("CARGO_BIN_EXE_lablink").into();
    })
    .await;
    within(60, "test", async {
        let id = launch(&s, "2").await;
        let (run, lines) = s.finished_run(id, 30).await;
        assert_eq!(run["state"], "succeeded", "{lines:?}");
        assert_eq!(run["progress"], json!({"done": 2, "total": 2, "failed": 0}));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_cancels_with_its_button_and_the_session_token() {
    let s = terraform_server(60).await;
    within(60, "test", async {
        set_mode(&s, "paced");
        let id = launch(&s, "2").await;
        progress_reaches(&s, id, json!({"done": 0, "total": 2, "failed": 0})).await;
        let console = Console::sign_in(&s).await;
        let page = console
            .get(&format!("/admin/runs/{id}"))
            .await
            .text()
            .await
            .expect("page");
        let action = format!("action=\"/api/runs/{id}/cancel\"");
        assert!(page.contains(&action), "{page}");
        assert!(page.contains("Cancel run"), "{page}");
        assert!(page.contains("planning…") || page.contains("0/2"), "{page}");
        // Without the session's token the form is refused and the run goes on.
        let refused = console.post(&format!("/api/runs/{id}/cancel"), &[]).await;
        assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
        assert_eq!(run_of(&s, id).await["run"]["state"], "running");
        let csrf = console.csrf.clone();
        let done = console
            .post(&format!("/api/runs/{id}/cancel"), &[("csrf_token", &csrf)])
            .await;
        assert!(done.status().is_success() || done.status().is_redirection());
        let (run, lines) = s.finished_run(id, 30).await;
        assert_eq!(run["state"], "cancelled", "{lines:?}");
        assert_eq!(run["cancelled_by"], "admin");
        // The VM in flight when SIGINT came was finished, as Terraform does.
        assert!(
            lines
                .last()
                .expect("last")
                .contains("created before it stopped: sleap-lablink-client-test-vm-1 ("),
            "{lines:?}"
        );
        // A finished run's page has no button.
        let page = console
            .get(&format!("/admin/runs/{id}"))
            .await
            .text()
            .await
            .expect("page");
        assert!(!page.contains("Cancel run"), "{page}");
        assert!(page.contains("cancelled"), "{page}");
    })
    .await;
}
