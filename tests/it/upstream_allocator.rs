//! `lablink agent` against the unmodified Python allocator of LabLink 0.1.2
//! (`lablink-allocator-service` from PyPI) on a real PostgreSQL: the VM registers, its GPU
//! health and log lines arrive, and a participant's claim wakes the agent's long-poll through
//! the allocator's LISTEN/NOTIFY, so the fake start-host runs with the code and the PIN.
//! It needs both, so it is `#[ignore]`d: `.ci/upstream-allocator` installs them and
//! `.ci/run` runs it with `--ignored`; missing, it fails.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::{client, crd_command, free_port, wait_for, within};

const VENV_VAR: &str = "LABLINK_UPSTREAM_ALLOCATOR_VENV";
/// The PIN every 0.1.2 allocator hands out.
const UPSTREAM_PIN: &str = "123456";

/// The virtualenv with the upstream allocator and PostgreSQL's bin directory.
fn installed() -> (PathBuf, PathBuf) {
    let venv = std::env::var_os(VENV_VAR)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/lablink-tools/upstream-allocator-0.1.2"))
        })
        .expect("LABLINK_UPSTREAM_ALLOCATOR_VENV or HOME");
    assert!(
        venv.join("bin/lablink-allocator").is_file(),
        "{} has no upstream allocator (lablink-allocator-service==0.1.2; .ci/upstream-allocator installs it)",
        venv.display()
    );
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .max_by_key(|bin| {
            bin.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
    let bin = newest.expect("PostgreSQL is not installed (/usr/lib/postgresql/*/bin; .ci/upstream-allocator installs it)");
    (venv, bin)
}

/// A throwaway PostgreSQL cluster on a loopback port; stopped (fast shutdown, then
/// SIGKILL) when dropped, whatever happened.
struct Cluster {
    child: std::process::Child,
    bin: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Cluster {
    /// As the `postgres` account when running as root (PostgreSQL refuses root).
    fn as_owner(cmd: &mut std::process::Command, owner: Option<(u32, u32)>) {
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
    }

    async fn start(bin: &Path, dir: &Path) -> Cluster {
        let owner = nix::unistd::geteuid().is_root().then(|| {
            let user = nix::unistd::User::from_name("postgres")
                .expect("look up the postgres account")
                .expect("running as root needs a postgres account (Debian package postgresql)");
            (user.uid.as_raw(), user.gid.as_raw())
        });
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = dir.join("pg");
        let data = home.join("data");
        let socket_dir = home.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("mkdir");
        if let Some((uid, gid)) = owner {
            for d in [&home, &socket_dir] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown");
            }
        }
        let mut initdb = std::process::Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .current_dir(&home)
            .stdout(Stdio::null());
        Self::as_owner(&mut initdb, owner);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port free a moment ago can be taken by then: a few attempts.
        for attempt in 1..=3 {
            let port = free_port();
            let log = home.join(format!("postgres-{attempt}.log"));
            let mut cmd = std::process::Command::new(bin.join("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&socket_dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .current_dir(&home)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"));
            Self::as_owner(&mut cmd, owner);
            let child = cmd.spawn().expect("start postgres");
            let mut cluster = Cluster {
                child,
                bin: bin.to_owned(),
                socket_dir: socket_dir.clone(),
                port,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if cluster.child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                if cluster.psql("postgres", "SELECT 1").await.as_deref() == Some("1") {
                    return cluster;
                }
                assert!(
                    Instant::now() < deadline,
                    "PostgreSQL not ready within 15 s: {}",
                    cluster.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("PostgreSQL did not start on port {port}: {}", cluster.log());
        }
        panic!("PostgreSQL did not start in 3 attempts");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn psql_command(&self, db: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin.join("psql"));
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// One query's rows (unaligned, `|`-separated), or None when it failed.
    async fn psql(&self, db: &str, sql: &str) -> Option<String> {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            self.psql_command(db).args(["-A", "-t", "-c", sql]).output(),
        )
        .await
        .ok()?
        .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- PostgreSQL log -----\n{}\n----- end -----",
                self.log()
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = kill(pid, Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The upstream allocator process; its log is printed when the test fails.
struct Allocator {
    child: tokio::process::Child,
    log: PathBuf,
    base: String,
}

impl Allocator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "----- upstream allocator log -----\n{}\n----- end -----",
                self.log()
            );
        }
    }
}

/// Prints a log file when the test fails.
struct ShowOnPanic(PathBuf);

impl Drop for ShowOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("----- {} -----\n{log}\n----- end -----", self.0.display());
        }
    }
}

fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream_allocator.py")
}

fn python(venv: &Path, dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
    cmd.arg(harness())
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir)
        .env("CONFIG_DIR", dir)
        .env("CONFIG_NAME", "config.yaml")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Its schema and NOTIFY trigger (its generate-init-sql, as its start.sh runs it), then
/// the app on a loopback port.
async fn start_allocator(venv: &Path, dir: &Path, pg: &Cluster, token: &str) -> Allocator {
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "environment: ci-test\n\
             db:\n  dbname: lablink_db\n  user: lablink\n  password: lablinkpw\n  \
             host: 127.0.0.1\n  port: {}\n  table_name: vms\n  message_channel: vm_updates\n\
             app:\n  admin_user: admin\n  admin_password: adminpw\n",
            pg.port
        ),
    )
    .expect("write config");
    let sql = dir.join("init.sql");
    let out = within(
        30,
        "generate-init-sql",
        python(venv, dir).arg("init-sql").arg(&sql).output(),
    )
    .await
    .expect("run the harness");
    assert!(
        out.status.success(),
        "init-sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = within(
        30,
        "psql -f init.sql",
        pg.psql_command("postgres").arg("-f").arg(&sql).output(),
    )
    .await
    .expect("run psql");
    assert!(
        out.status.success(),
        "init.sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not part of upstream: a record of every status it stores, so the test sees
    // `initializing` however short-lived.
    let history = "CREATE TABLE status_history (n serial, hostname text, status text);
        CREATE FUNCTION record_status() RETURNS trigger AS $$ BEGIN
            INSERT INTO status_history (hostname, status) VALUES (NEW.hostname, NEW.status);
            RETURN NEW; END; $$ LANGUAGE plpgsql SECURITY DEFINER;
        CREATE TRIGGER record_status AFTER INSERT OR UPDATE OF status ON vms
            FOR EACH ROW EXECUTE FUNCTION record_status();";
    assert!(
        pg.psql("lablink_db", history).await.is_some(),
        "status history trigger"
    );

    let log = dir.join("allocator.log");
    let port_file = dir.join("allocator.port");
    let child = python(venv, dir)
        .arg("serve")
        .arg(&port_file)
        .env("UPSTREAM_API_TOKEN", token)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the upstream allocator");
    let mut allocator = Allocator {
        child,
        log,
        base: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            break port;
        }
        if let Ok(Some(status)) = allocator.child.try_wait() {
            panic!(
                "the upstream allocator exited ({status}): {}",
                allocator.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the upstream allocator did not listen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    allocator.base = format!("http://127.0.0.1:{}", port.trim());
    allocator
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and the upstream 0.1.2 allocator from PyPI (.ci/upstream-allocator installs them)"]
async fn lablink_agent_works_against_the_upstream_0_1_2_allocator() {
    let (venv, pg_bin) = installed();
    let started = Instant::now();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let pg = Cluster::start(&pg_bin, dir).await;
    let token = "upstream-allocator-test-token";
    let allocator = start_allocator(&venv, dir, &pg, token).await;
    let base = allocator.base.clone();
    let vm = "upstream-alloc-vm-1";
    let row = |cols: &str| {
        let sql = format!("SELECT {cols} FROM vms WHERE hostname = '{vm}'");
        let pg = &pg;
        async move { pg.psql("lablink_db", &sql).await.unwrap_or_default() }
    };

    // The agent, with the fake start-host and nvidia-smi (as tests/it/agent.rs runs it).
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin");
    let p = |name: &str| dir.join(name);
    for sub in ["crd", "state", "home"] {
        std::fs::create_dir(p(sub)).expect("mkdir");
    }
    std::fs::write(p("gpu-mode"), "healthy").expect("gpu mode");
    std::fs::write(p("cloud-init.log"), "boot line one\nboot line two\n").expect("log");
    let agent_log = p("agent.log");
    let _show = ShowOnPanic(agent_log.clone());
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_lablink"));
    agent
        .arg("agent")
        .args(["--allocator-url", &base])
        .arg(format!("--token={token}"))
        .args(["--vm-name", vm])
        .args(["--software", "lablinkupstreamallocsw"])
        .arg("--start-host")
        .arg(fixtures.join("start-host"))
        .arg("--crd-config-dir")
        .arg(p("crd"))
        .arg("--state-dir")
        .arg(p("state"))
        // Not /run/lablink: the tests run as root, many agents at once.
        .arg("--hand-socket")
        .arg(p("hand.sock"))
        .arg("--log-file")
        .arg(p("cloud-init.log"))
        .args(["--gpu-probe", "nvidia-smi"])
        .args(["--gpu-interval", "0.2", "--inuse-interval", "0.2"])
        .args(["--log-flush-ms", "200"])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", fixtures.display()))
        .env("HOME", p("home"))
        .env("LABLINK_LOG", "debug")
        .env("DISPLAY", ":99")
        .env("FAKE_GPU_MODE_FILE", p("gpu-mode"))
        .env("FAKE_GPU_CALL_LOG", p("gpu-calls"))
        .env("FAKE_GPU_PID_FILE", p("gpu-pids"))
        .env("FAKE_START_HOST_LOG", p("start-host.args"))
        .env("FAKE_START_HOST_STDIN", p("start-host.stdin"))
        .env("FAKE_START_HOST_ENV", p("start-host.env"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&agent_log).expect("log"))
        .stderr(std::fs::File::create(&agent_log).expect("log"))
        .kill_on_drop(true);
    let mut agent = agent.spawn().expect("start lablink agent");
    let read = |name: &str| std::fs::read_to_string(p(name)).unwrap_or_default();
    let http = client();

    within(60, "lablink agent against the upstream allocator", async {
        // Registered: initializing, then running (each report as upstream stored it).
        wait_for(20, "the VM is running in upstream's database", || async {
            (row("status").await == "running").then_some(())
        })
        .await;
        assert_eq!(
            pg.psql(
                "lablink_db",
                &format!("SELECT string_agg(status, ',' ORDER BY n) FROM status_history WHERE hostname = '{vm}'"),
            )
            .await
            .as_deref(),
            Some("initializing,running")
        );
        let status: serde_json::Value = http
            .get(format!("{base}/api/vm-status/{vm}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /api/vm-status/<vm>")
            .json()
            .await
            .expect("json");
        assert_eq!(
            status,
            serde_json::json!({"hostname": vm, "status": "running"})
        );

        wait_for(10, "GPU health Healthy", || async {
            (row("healthy").await == "Healthy").then_some(())
        })
        .await;
        wait_for(10, "the log lines are shipped", || async {
            (row("cloudinitlogs").await == "boot line one\nboot line two").then_some(())
        })
        .await;
        // The agent's /vm_startup is parked in upstream's LISTEN (a claim made before that
        // would be missed by the 0.1.2 allocator until the agent asks again).
        wait_for(
            15,
            "upstream LISTENs for the agent's /vm_startup",
            || async {
                let n = pg
                    .psql(
                        "lablink_db",
                        "SELECT count(*) FROM pg_stat_activity \
                     WHERE state = 'idle' AND query LIKE 'LISTEN%'",
                    )
                    .await;
                (n.as_deref() == Some("1")).then_some(())
            },
        )
        .await;
        assert!(
            read("start-host.args").is_empty(),
            "start-host before a claim"
        );

        let form = [
            ("email", "ada@example.org".to_owned()),
            ("crd_command", crd_command("4/0AupstreamAlloc-1")),
        ];
        let claimed = http
            .post(format!("{base}/api/request_vm"))
            .form(&form)
            .send()
            .await
            .expect("POST /api/request_vm");
        assert_eq!(claimed.status().as_u16(), 200);
        let html = claimed.text().await.expect("body");
        assert!(
            html.contains(vm) && html.contains(UPSTREAM_PIN),
            "not assigned: {html}"
        );

        wait_for(15, "start-host runs", || async {
            (read("start-host.args").lines().count() >= 3).then_some(())
        })
        .await;
        let argv: Vec<String> = read("start-host.args").lines().map(str::to_owned).collect();
        assert_eq!(
            argv,
            [
                "--code=4/0AupstreamAlloc-1".to_owned(),
                "--redirect-url=https://remotedesktop.google.com/_/oauthredirect".to_owned(),
                format!("--name={vm}"),
            ]
        );
        assert_eq!(
            read("start-host.stdin"),
            format!("{UPSTREAM_PIN}\n{UPSTREAM_PIN}\n")
        );
        assert_eq!(read("start-host.env"), "DISPLAY=[]\n");
        wait_for(10, "the agent reports the desktop started", || async {
            read("agent.log")
                .contains("desktop started; the participant can connect")
                .then_some(())
        })
        .await;
        assert_eq!(
            row("status, useremail, pin").await,
            format!("running|ada@example.org|{UPSTREAM_PIN}")
        );
        assert!(
            agent.try_wait().expect("try_wait").is_none(),
            "the agent exited"
        );
    })
    .await;
    let pid = Pid::from_raw(agent.id().expect("agent pid") as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM the agent");
    let status = within(10, "the agent stops on SIGTERM", agent.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "agent: {}", read("agent.log"));
    drop(allocator);
    drop(pg);
    eprintln!(
        "upstream allocator test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
