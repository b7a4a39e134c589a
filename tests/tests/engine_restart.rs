//! End-to-end: `dockop run` survives a restart of the Docker engine — it reconnects its event stream with
//! backoff, lists everything again, and converges.
//!
//! This test restarts the shared `dockerd`, which disturbs every other test using the engine, so it is
//! `#[ignore]`d and run alone, after the rest: `cargo nextest run -p dockop-e2e --test engine_restart
//! --run-ignored only`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dockop_e2e::images::*;
use dockop_e2e::*;

fn served(port: u16) -> bool {
    http_get(
        &format!("http://127.0.0.1:{port}{HEALTH_PATH}"),
        Duration::from_secs(2),
    )
    .is_ok_and(|(code, _)| code == 200)
}

#[test]
#[ignore = "restarts the shared Docker engine: run alone with --run-ignored only"]
fn reconnects_after_dockerd_restart_and_converges() {
    let env = TestEnv::new("ctl-engine-restart");
    let name = env.name("web");
    let port = env.free_port();
    let file = env.write("web.yaml", &env.web_spec(&name, WEB_V1, port));
    let listen = format!("127.0.0.1:{}", env.free_port());
    let d = env.dockop().spawn(
        [
            "-v",
            "run",
            "--listen",
            &listen,
            "-f",
            file.to_str().expect("utf8"),
        ],
        env.dir(),
    );
    assert!(
        wait_until(Duration::from_secs(60), || served(port)),
        "serving\n{}",
        d.stderr()
    );

    restart_dockerd();
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || d
            .stderr()
            .contains("reachable again")),
        "dockop reconnected\n{}",
        d.stderr()
    );
    eprintln!("dockerd up -> dockop reconnected in {:?}", t0.elapsed());
    assert!(
        wait_until(Duration::from_secs(60), || served(port)),
        "serving after the restart\n{}",
        d.stderr()
    );

    // The new event stream works: a removed container comes back at once.
    docker_ok(["rm", "-f", &name]);
    let t1 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || served(port)),
        "recreated after the restart\n{}",
        d.stderr()
    );
    eprintln!(
        "docker rm -f after the restart -> serving again in {:?}",
        t1.elapsed()
    );
}
