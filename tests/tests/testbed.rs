//! The test bed itself: registries, digests, auth and the behaviour of every test image, checked
//! against the real engine, so a broken test bed fails here and not as a puzzling dockop failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dockop_e2e::images::*;
use dockop_e2e::{
    AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, TestEnv, container_ip, docker, docker_in,
    docker_login, docker_ok, engine_get, http_get, wait_until,
};

fn health_url(host_port: u16) -> String {
    format!("http://127.0.0.1:{host_port}{HEALTH_PATH}")
}

/// The digest the engine's distribution endpoint (what dockop asks) reports equals the one `docker push` printed.
#[test]
fn engine_distribution_digest_matches_push_digest() {
    let env = TestEnv::new("digest");
    let (reference, pushed) = env.push_as(WEB_V1, "live");
    for image in [reference.as_str(), WEB_V1] {
        let (status, body) = engine_get(
            &format!("/v1.41/distribution/{image}/json"),
            Duration::from_secs(10),
        )
        .expect("engine API");
        assert_eq!(status, 200, "distribution {image}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("distribution JSON");
        let digest = json["Descriptor"]["digest"]
            .as_str()
            .expect("Descriptor.digest");
        assert_eq!(
            digest, pushed,
            "engine digest for {image} vs docker push digest"
        );
    }
    // A different image really has a different digest.
    let (_, v2) = env.push_as(WEB_V2, "other");
    assert_ne!(v2, pushed);
}

/// Real OpenCode at both versions serves /global/health with its own version.
#[test]
fn opencode_both_versions_report_their_version() {
    let env = TestEnv::new("opencode");
    let mut started = Vec::new();
    for (suffix, image, version) in [
        ("a", OPENCODE_1_18_33, "1.18.33"),
        ("b", OPENCODE_1_18_34, "1.18.34"),
    ] {
        let port = env.free_port();
        let publish = format!("127.0.0.1:{port}:{OPENCODE_PORT}");
        env.run_container(suffix, &["-p", &publish], image);
        started.push((port, version, Instant::now()));
    }
    for (port, version, t0) in started {
        let mut last = Err(String::new());
        let ok = wait_until(Duration::from_secs(60), || {
            last = http_get(&health_url(port), Duration::from_secs(2));
            matches!(&last, Ok((200, _)))
        });
        assert!(ok, "opencode {version} never healthy: {last:?}");
        let (_, body) = last.expect("checked above");
        let json: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
        assert_eq!(json["healthy"], true, "{body}");
        assert_eq!(json["version"], version, "{body}");
        eprintln!(
            "opencode {version}: healthy {:.1?} after start",
            t0.elapsed()
        );
    }
}

/// The bad OpenCode image answers 401 on its health path.
#[test]
fn opencode_bad_answers_401() {
    let env = TestEnv::new("opencode-bad");
    let port = env.free_port();
    env.run_container(
        "bad",
        &["-p", &format!("127.0.0.1:{port}:{OPENCODE_PORT}")],
        OPENCODE_BAD,
    );
    let mut last = Err(String::new());
    let answered = wait_until(Duration::from_secs(60), || {
        last = http_get(&health_url(port), Duration::from_secs(2));
        last.is_ok()
    });
    assert!(answered, "opencode:bad never answered: {last:?}");
    assert_eq!(last.as_ref().map(|(s, _)| *s), Ok(401), "{last:?}");
}

/// 5001 refuses an anonymous pull and accepts one after `docker login` (throwaway DOCKER_CONFIG).
#[test]
fn auth_registry_requires_login() {
    let env = TestEnv::new("auth");
    let anon = env.dir().join("docker-anon");
    let logged = env.dir().join("docker-login");
    std::fs::create_dir_all(&anon).expect("mkdir");
    std::fs::create_dir_all(&logged).expect("mkdir");

    let out = docker_in(&anon, ["pull", "-q", AUTH_WEB_V1]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success(),
        "anonymous pull of {AUTH_WEB_V1} succeeded"
    );
    assert!(
        stderr.contains("no basic auth credentials") || stderr.contains("unauthorized"),
        "anonymous pull failed, but not with an auth error: {stderr}"
    );

    docker_login(&logged, AUTH_REGISTRY, AUTH_USER, AUTH_PASSWORD);
    let out = docker_in(&logged, ["pull", "-q", AUTH_WEB_V1]);
    assert!(
        out.status.success(),
        "pull after login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Same content as the anonymous registry's web:v1.
    let id = |image: &str| docker_ok(["image", "inspect", "-f", "{{.Id}}", image]);
    dockop_e2e::ensure_local(WEB_V1);
    assert_eq!(id(AUTH_WEB_V1), id(WEB_V1));
}

#[test]
fn web_v1_and_v2_report_their_versions() {
    let env = TestEnv::new("web-versions");
    for (suffix, image, version) in [
        ("v1", WEB_V1, "1"),
        ("v2", WEB_V2, "2"),
        ("v3", WEB_V3, "3"),
    ] {
        let port = env.free_port();
        env.run_container(
            suffix,
            &["-p", &format!("127.0.0.1:{port}:{WEB_PORT}")],
            image,
        );
        let mut last = Err(String::new());
        assert!(
            wait_until(Duration::from_secs(10), || {
                last = http_get(&health_url(port), Duration::from_secs(2));
                last.is_ok()
            }),
            "{image}: {last:?}"
        );
        assert_eq!(
            last,
            Ok((200, format!(r#"{{"healthy":true,"version":"{version}"}}"#))),
            "{image}"
        );
    }
    // With --init the images stop at once on SIGTERM.
    let t0 = Instant::now();
    docker_ok(["stop", &env.name("v1")]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "docker stop took {:.1?}",
        t0.elapsed()
    );
}

#[test]
fn web_unhealthy_answers_500() {
    let env = TestEnv::new("web-unhealthy");
    let port = env.free_port();
    env.run_container(
        "u",
        &["-p", &format!("127.0.0.1:{port}:{WEB_PORT}")],
        WEB_UNHEALTHY,
    );
    let mut last = Err(String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = http_get(&health_url(port), Duration::from_secs(2));
            last.is_ok()
        }),
        "{last:?}"
    );
    assert_eq!(last.as_ref().map(|(s, _)| *s), Ok(500), "{last:?}");
}

#[test]
fn web_tarpit_accepts_but_never_answers() {
    let env = TestEnv::new("web-tarpit");
    let name = env.run_container("t", &[], WEB_TARPIT);
    let ip = container_ip(&name);
    let url = format!("http://{ip}:{WEB_PORT}{HEALTH_PATH}");
    // Listening: connect succeeds (poll until the server is up), then nothing comes back.
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            ip.as_str(),
            WEB_PORT
        ))
        .is_ok()),
        "tarpit never accepted a connection on {ip}:{WEB_PORT}"
    );
    let t0 = Instant::now();
    let result = http_get(&url, Duration::from_secs(2));
    assert!(
        matches!(&result, Err(e) if e.starts_with("timed out")),
        "tarpit answered: {result:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "gave up too early: {:.1?}",
        t0.elapsed()
    );
}

#[test]
fn web_slow_becomes_healthy_after_about_5s() {
    let env = TestEnv::new("web-slow");
    let port = env.free_port();
    let t0 = Instant::now();
    env.run_container(
        "s",
        &["-p", &format!("127.0.0.1:{port}:{WEB_PORT}")],
        WEB_SLOW,
    );
    std::thread::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed()));
    let early = http_get(&health_url(port), Duration::from_secs(1));
    assert!(
        !matches!(early, Ok((200, _))),
        "web:slow healthy at 1 s: {early:?}"
    );
    let mut last = Err(String::new());
    let deadline = Duration::from_secs(8).saturating_sub(t0.elapsed());
    assert!(
        wait_until(deadline, || {
            last = http_get(&health_url(port), Duration::from_secs(1));
            matches!(last, Ok((200, _)))
        }),
        "web:slow not healthy by 8 s: {last:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "web:slow healthy too early: {:.1?}",
        t0.elapsed()
    );
}

#[test]
fn web_crash_exits_nonzero() {
    let env = TestEnv::new("web-crash");
    let name = env.run_container("c", &[], WEB_CRASH);
    let code = docker_ok(["wait", &name]);
    assert_ne!(code, "0", "web:crash exited 0");
    let out = docker(["logs", &name]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("crashing"),
        "{out:?}"
    );
}

/// The Drop guard removes labelled containers and volumes, also when the test panics.
#[test]
fn test_env_cleans_up_on_panic() {
    let label;
    {
        let env = TestEnv::new("cleanup");
        label = env.label();
        let vol = env.name("data");
        docker_ok(["volume", "create", "--label", &label, &vol]);
        let mount = format!("{vol}:/data");
        env.run_container("x", &["-v", &mount], WEB_V1);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _env = env;
            panic!("deliberate panic inside a test");
        }));
        assert!(result.is_err());
    }
    let filter = format!("label={label}");
    assert_eq!(
        docker_ok(["ps", "-aq", "--filter", &filter]),
        "",
        "containers left behind"
    );
    assert_eq!(
        docker_ok(["volume", "ls", "-q", "--filter", &filter]),
        "",
        "volumes left behind"
    );
}
