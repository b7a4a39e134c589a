//! `dockop convert` against the real thing (issue 17): one small Compose file (web:v1 on a network, by
//! alias) run with `docker-compose` and, converted, with `dockop apply`; both answer the same. Distinct
//! project and container names and ports; both are cleaned up.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::Duration;

use dockop_e2e::images::*;
use dockop_e2e::*;

const COMPOSE: &str = "services:
  web:
    image: ${IMAGE}
    container_name: ${NAME}
    labels:
      dockop-e2e: ${E2E_ID}
    init: true
    ports:
      - \"127.0.0.1:${PORT:?the test sets it}:8080\"
    networks:
      front:
        aliases: [web-backend]
    environment:
      GREETING: ${GREETING:-hello}
    healthcheck:
      test: [\"CMD\", \"wget\", \"-q\", \"-O-\", \"http://localhost:8080/global/health\"]
      interval: 1s
      retries: 3
    stop_grace_period: 2s
networks:
  front: {}
";

fn compose(
    env: &TestEnv,
    file: &str,
    project: &str,
    vars: &[(&str, String)],
    args: &[&str],
) -> Output {
    let mut cmd = Command::new("docker-compose");
    cmd.arg("-p")
        .arg(project)
        .arg("-f")
        .arg(file)
        .args(args)
        .current_dir(env.dir());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output()
        .expect("docker-compose (Debian package docker-compose; the test bed installs it)")
}

#[track_caller]
fn health_body(port: u16) -> String {
    let mut last = Err(String::new());
    let ok = wait_until(Duration::from_secs(30), || {
        last = http_get(
            &format!("http://127.0.0.1:{port}{HEALTH_PATH}"),
            Duration::from_secs(2),
        );
        last.as_ref().is_ok_and(|(c, _)| *c == 200)
    });
    assert!(ok, "no 200 on {port}: {last:?}");
    last.unwrap().1
}

#[test]
fn compose_and_converted_objects_answer_alike() {
    let env = TestEnv::new("convert");
    let file = env.write("compose/compose.yaml", COMPOSE);
    let file = file.to_str().unwrap();
    let vars = |who: &str, port: u16| {
        vec![
            ("IMAGE", WEB_V1.to_owned()),
            ("NAME", env.name(&format!("{who}-web"))),
            ("E2E_ID", env.id().to_owned()),
            ("PORT", port.to_string()),
        ]
    };
    let compose_project = env.name("compose");

    // docker-compose runs it.
    let compose_port = env.free_port();
    let cvars = vars("c", compose_port);
    let up = compose(&env, file, &compose_project, &cvars, &["up", "-d"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let from_compose = health_body(compose_port);

    // dockop runs the converted documents.
    let dockop_port = env.free_port();
    let mut d = env
        .dockop()
        .env("COMPOSE_PROJECT_NAME", &env.name("dockop"));
    for (k, v) in vars("d", dockop_port) {
        d = d.env(k, &v);
    }
    let out = d.run(["convert", "-f", file]);
    out.assert_success();
    assert!(
        out.stderr.trim().is_empty(),
        "nothing left out expected:\n{out}"
    );
    let converted = env.write("converted.yaml", &out.stdout);
    let converted = converted.to_str().unwrap();
    env.dockop().run(["validate", converted]).assert_success();
    env.dockop()
        .run(["apply", "-f", converted])
        .assert_success();
    let from_dockop = health_body(dockop_port);
    assert_eq!(from_compose, from_dockop);

    // Same shape in Docker: the network alias, the env, init.
    let dockop_name = env.name("d-web");
    let net = format!("{}_front", env.name("dockop"));
    let aliases = docker_ok([
        "inspect",
        "-f",
        &format!("{{{{json (index .NetworkSettings.Networks \"{net}\").Aliases}}}}"),
        &dockop_name,
    ]);
    assert!(
        aliases.contains("web-backend") && aliases.contains("\"web\""),
        "{aliases}"
    );
    let env_list = docker_ok(["inspect", "-f", "{{json .Config.Env}}", &dockop_name]);
    assert!(env_list.contains("GREETING=hello"), "{env_list}");
    assert_eq!(
        docker_ok(["inspect", "-f", "{{.HostConfig.Init}}", &dockop_name]).trim(),
        "true"
    );

    let down = compose(
        &env,
        file,
        &compose_project,
        &cvars,
        &["down", "-v", "--timeout", "2"],
    );
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}
