//! End-to-end tests of start-first updates behind `dockop proxy` (issue 16): `wrk` (keep-alive) runs
//! through the proxy during a good update and a bad release of the real OpenCode image and sees no socket
//! error and no non-2xx answer; killing `dockop run` costs nothing; a restarted proxy serves its persisted
//! routes; a dockop killed right after the switch, or after the old container is retired, converges on the
//! next run without a failed request.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

/// `dockop proxy` with this test's state dir; stopped on drop.
struct Proxy {
    run: Running,
    metrics: u16,
}

impl Proxy {
    fn start(env: &TestEnv) -> Self {
        let metrics = env.free_port();
        let listen = format!("127.0.0.1:{metrics}");
        let logs = env.dir().join(format!("proxy-{metrics}"));
        std::fs::create_dir_all(&logs).expect("log dir");
        let run = env
            .dockop()
            .spawn(["proxy", "--metrics-listen", listen.as_str()], &logs);
        let p = Proxy { run, metrics };
        assert!(
            wait_until(Duration::from_secs(20), || p.livez()),
            "dockop proxy did not start\n{}",
            p.run.stderr()
        );
        p
    }

    fn livez(&self) -> bool {
        http_get(
            &format!("http://127.0.0.1:{}/livez", self.metrics),
            Duration::from_secs(1),
        )
        .is_ok_and(|(c, _)| c == 200)
    }

    fn metrics(&self) -> String {
        http_get(
            &format!("http://127.0.0.1:{}/metrics", self.metrics),
            Duration::from_secs(2),
        )
        .map(|(_, b)| b)
        .unwrap_or_default()
    }
}

/// `wrk` with keep-alive connections against 127.0.0.1:`port`, until [`Load::finish`].
struct Load {
    child: Child,
}

/// What `wrk` counted.
#[derive(Debug)]
struct Counted {
    requests: u64,
    socket_errors: u64,
    non_2xx: u64,
    text: String,
}

impl Load {
    fn start(port: u16, path: &str) -> Self {
        let child = Command::new("wrk")
            .args([
                "-t2",
                "-c16",
                "-d120s",
                "--timeout",
                "5s",
                &format!("http://127.0.0.1:{port}{path}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (tests/testbed/up installs it)");
        std::thread::sleep(Duration::from_millis(500));
        Load { child }
    }

    /// Stops wrk (SIGINT: it prints its figures) and parses them.
    fn finish(self) -> Counted {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let out = self.child.wait_with_output().expect("wrk output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let number_after = |key: &str| -> u64 {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(|rest| {
                    rest.split(|c: char| c == ',' || c.is_whitespace())
                        .filter_map(|w| w.parse::<u64>().ok())
                        .sum()
                })
                .unwrap_or(0)
        };
        let requests = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let socket_errors = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Socket errors:"))
            .map(|rest| {
                rest.split(',')
                    .filter_map(|part| part.split_whitespace().last())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        Counted {
            requests,
            socket_errors,
            non_2xx: number_after("Non-2xx or 3xx responses:"),
            text,
        }
    }
}

#[track_caller]
fn assert_no_failed_request(c: &Counted, what: &str) {
    assert!(
        c.requests > 100,
        "{what}: wrk made too few requests\n{}",
        c.text
    );
    assert_eq!(c.socket_errors, 0, "{what}: socket errors\n{}", c.text);
    assert_eq!(c.non_2xx, 0, "{what}: non-2xx answers\n{}", c.text);
    eprintln!(
        "{what}: {} requests through the proxy, 0 socket errors, 0 non-2xx",
        c.requests
    );
}

fn opencode_spec(env: &TestEnv, name: &str, image: &str, port: u16) -> String {
    env.object_yaml(
        name,
        image,
        &format!(
            "  command: [/usr/local/bin/opencode, serve, --port, \"{OPENCODE_PORT}\", --hostname, 0.0.0.0]
  ports:
    - {{containerPort: {OPENCODE_PORT}, hostPort: {port}, hostIP: 127.0.0.1}}
  health:
    path: {HEALTH_PATH}
    port: {OPENCODE_PORT}
    intervalSeconds: 1
    startupDeadlineSeconds: 60
  update:
    strategy: start-first
    drainSeconds: 5
    preflight: false
  init: true
  stopTimeoutSeconds: 5
",
        ),
    )
}

fn web_spec(env: &TestEnv, name: &str, image: &str, port: u16) -> String {
    env.web_spec_updating(
        name,
        image,
        port,
        "preflight: false, strategy: start-first, drainSeconds: 2",
    )
}

#[test]
fn start_first_without_a_proxy_is_a_clear_error_and_touches_nothing() {
    let env = TestEnv::new("zd-noproxy");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &web_spec(&env, &name, WEB_V1, port));
    let out = env
        .dockop()
        .run(["apply", "-f", file.to_str().expect("utf8")]);
    out.assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("no `dockop proxy` answers on")
            && text.contains("start it with `dockop proxy`"),
        "{out}"
    );
    assert!(env.containers().is_empty(), "nothing created");
}

#[test]
fn start_first_good_update_and_bad_release_of_real_opencode_lose_no_request() {
    let env = TestEnv::new("zd-opencode");
    let proxy = Proxy::start(&env);
    let (tag, _) = env.push_as(OPENCODE_1_18_33, "live");
    let name = env.name("oc");
    let port = env.free_port();
    let file = env.write("oc.yaml", &opencode_spec(&env, &name, &tag, port));
    let file = file.to_str().expect("utf8");
    env.dockop().run(["apply", "-f", file]).assert_success();
    assert_eq!(served_version(port).as_deref(), Some("1.18.33"));
    // The container publishes nothing: the proxy owns the port.
    let published = docker_ok(["port", &name]);
    assert!(published.trim().is_empty(), "published: {published}");

    let load = Load::start(port, HEALTH_PATH);
    env.push_as(OPENCODE_1_18_34, "live");
    let out = env.dockop().run(["apply", "-f", file]);
    out.assert_success();
    assert!(out.stderr.contains("switched traffic to"), "{out}");
    assert_eq!(served_version(port).as_deref(), Some("1.18.34"));
    // A bad release (answers 401), preflight off: gated beside the old one, never switched to.
    env.push_as(OPENCODE_BAD, "live");
    let out = env.dockop().run(["apply", "-f", file]);
    out.assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("HTTP 401"), "{out}");
    assert!(
        text.contains("traffic never left the running container"),
        "{out}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let counted = load.finish();
    assert_no_failed_request(&counted, "good update + bad release");
    assert_eq!(served_version(port).as_deref(), Some("1.18.34"));
    assert_eq!(
        env.containers(),
        vec![name.clone()],
        "one container, the proven one"
    );
    let st = env.status(&name);
    assert_eq!(st["history"][0]["result"], "rolled_back", "{st:#}");
    let m = proxy.metrics();
    assert!(
        m.contains(&format!(
            "dockop_proxy_switches_total{{object=\"{name}\"}} 1"
        )),
        "one switch: the good update (a new route is not a switch, the bad release never switched):\n{m}"
    );
}

#[test]
fn killing_dockop_run_costs_nothing_and_a_restarted_proxy_serves_its_routes() {
    let env = TestEnv::new("zd-kill");
    let mut proxy = Proxy::start(&env);
    let name = env.name("web");
    let port = env.free_port();
    env.write("spec/web.yaml", &web_spec(&env, &name, WEB_V1, port));
    let listen = format!("127.0.0.1:{}", env.free_port());
    std::fs::create_dir_all(env.dir().join("run")).expect("log dir");
    let mut run = env.dockop().spawn(
        [
            "run",
            "-f",
            env.dir().join("spec").to_str().expect("utf8"),
            "--listen",
            &listen,
        ],
        &env.dir().join("run"),
    );
    assert!(
        wait_until(Duration::from_secs(60), || served_version(port).is_some()),
        "never served through the proxy\n{}",
        run.stderr()
    );
    let load = Load::start(port, HEALTH_PATH);
    run.signal("KILL");
    let _ = run.wait(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    assert_no_failed_request(&load.finish(), "kill -9 of dockop run");

    // The proxy itself restarts (an upgrade of dockop): it serves its persisted routes again at once,
    // with no operator running.
    proxy.run.stop(Duration::from_secs(5));
    let mut again = Proxy::start(&env);
    assert!(
        wait_until(Duration::from_secs(5), || served_version(port).as_deref()
            == Some("1")),
        "the restarted proxy does not serve the route\n{}",
        again.run.stderr()
    );
    again.run.stop(Duration::from_secs(5));
}

/// A dockop killed at fault point `step` of a start-first update (`after-switch-route`,
/// `after-retire-old`) leaves the app serving; the next run finishes the update.
fn crash_after(test: &str, step: &str) {
    let env = TestEnv::new(test);
    let _proxy = Proxy::start(&env);
    let (tag, _) = env.push_as(WEB_V1, "live");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &web_spec(&env, &name, &tag, port));
    let file = file.to_str().expect("utf8");
    env.dockop().run(["apply", "-f", file]).assert_success();
    let load = Load::start(port, HEALTH_PATH);
    env.push_as(WEB_V2, "live");
    let out = env
        .dockop()
        .env("DOCKOP_FAULT_ABORT_AT", step)
        .run(["apply", "-f", file]);
    assert!(!out.success(), "aborted at {step}: {out}");
    assert_eq!(
        served_version(port).as_deref(),
        Some("2"),
        "the switch happened"
    );
    let out = env.dockop().run(["apply", "-f", file]);
    out.assert_success();
    std::thread::sleep(Duration::from_secs(1));
    assert_no_failed_request(&load.finish(), &format!("crash after {step}"));
    assert_eq!(served_version(port).as_deref(), Some("2"));
    assert_eq!(
        env.containers(),
        vec![name.clone()],
        "converged to one container"
    );
    let again = env.dockop().run(["plan", "-f", file]);
    again.assert_code(0);
}

#[test]
fn start_first_crash_after_the_switch_converges() {
    crash_after("zd-crash7", "after-switch-route");
}

#[test]
fn start_first_crash_after_the_old_container_is_retired_converges() {
    crash_after("zd-crash8", "after-retire-old");
}
