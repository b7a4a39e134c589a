//! Properties of loading: every valid spec survives serialize (serde-saphyr) -> load unchanged, and no
//! input, however broken, makes loading panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dockop::spec::load::load_str;
use dockop::spec::*;
use proptest::prelude::*;

const TRICKY: &[&str] = &[
    "",
    "yes",
    "no",
    "on",
    "off",
    "true",
    "False",
    "null",
    "~",
    "8080",
    "0755",
    "1e3",
    "0x1F",
    ".inf",
    "- a",
    "a: b",
    "#x",
    " lead",
    "trail ",
    "tab\there",
    "quote\"s",
    "'",
    "@at",
    "`tick`",
    "%pct",
    "*star",
    "&amp",
    "!bang",
    "{x}",
    "[y]",
    "ünïcødé ✓",
    "back\\slash",
    "2024-01-01",
    "<<",
    "---",
    "...",
    "?",
    "multi\nline",
    "|",
    ">",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TRICKY).prop_map(String::from),
        "[ -~]{0,24}",
        "\\PC{0,12}"
    ]
}

fn single_line() -> impl Strategy<Value = String> {
    text().prop_filter("single line", |s| !s.chars().any(char::is_control))
}

const IMAGES: &[&str] = &[
    "nginx",
    "nginx:1.27",
    "127.0.0.1:5000/web:v1",
    "127.0.0.1:5000/opencode:1.18.34",
    "ghcr.io/owner/repo_name/sub-part:v1.2_3",
    "localhost/web",
    "web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

const HASHES: &[&str] = &[
    "$y$j9T$lUR8QwwT0jEoZn7XKRPEr.$s0CRUev4ny1s3qq6YmpNbLUsiIybckwxG.gxZBGMohD",
    "$6$rounds=5000$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
];

const WINDOWS: &[&str] = &[
    "Mon-Fri 02:00-04:00 UTC",
    "Sat,Sun 22:00-02:00 +02:00",
    "00:00-24:00 UTC",
    "* 01:00-02:00 -05:30",
];

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        "[a-z]([-a-z0-9]{0,20}[a-z0-9])?",
        prop::collection::btree_map(
            "[a-z]{1,8}(\\.example\\.com/[a-z]{1,5})?",
            single_line(),
            0..3,
        ),
        prop::collection::btree_map("[a-z]{1,8}", text(), 0..3),
    )
        .prop_map(|(name, labels, annotations)| Metadata {
            name,
            labels,
            annotations,
        })
}

fn env() -> impl Strategy<Value = Vec<EnvVar>> {
    prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", prop::option::of(text()), 0..4)
        .prop_map(|m| {
            m.into_iter()
                .map(|(name, value)| match value {
                    Some(v) => EnvVar {
                        name,
                        value: Some(v),
                        value_from: None,
                    },
                    None => EnvVar {
                        name: name.clone(),
                        value: None,
                        value_from: Some(EnvSource {
                            file: format!("/etc/dockop/secrets/{name}"),
                        }),
                    },
                })
                .collect()
        })
}

fn ports() -> impl Strategy<Value = Vec<Port>> {
    prop::collection::btree_map(
        1u16..=65535,
        (
            1u16..=65535,
            prop::sample::select(&["127.0.0.1", "0.0.0.0", "::1", "10.1.2.3"][..]),
            any::<bool>(),
            any::<bool>(),
        ),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(host, (container, ip, udp, implicit))| Port {
                container_port: if implicit { host } else { container },
                host_port: if implicit { None } else { Some(host) },
                host_ip: ip.to_owned(),
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            })
            .collect()
    })
}

fn volumes() -> impl Strategy<Value = Vec<Volume>> {
    prop::collection::btree_map(
        "/[a-z]{1,6}(/[a-z]{1,6})?",
        ("[a-z0-9][a-z0-9_.-]{0,8}", any::<bool>(), any::<bool>()),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(mount, (name, named, ro))| Volume {
                name: named.then(|| name.clone()),
                host_path: (!named).then(|| format!("/srv/{name}")),
                mount_path: mount,
                read_only: ro,
            })
            .collect()
    })
}

fn users() -> impl Strategy<Value = Vec<User>> {
    prop::collection::btree_map("[a-z_][a-z0-9_-]{0,8}", (0usize..4, any::<bool>()), 0..4).prop_map(
        |m| {
            m.into_iter()
                .map(|(name, (pw, locked))| User {
                    password_hash: HASHES.get(pw).map(|h| SecretText::from(*h)),
                    password_file: (pw == 2).then(|| format!("/etc/dockop/{name}")),
                    name,
                    locked,
                })
                .collect()
        },
    )
}

fn health() -> impl Strategy<Value = Option<Health>> {
    prop::option::of(
        (
            "/[a-z/_-]{0,12}",
            1u16..=65535,
            1u32..=3600,
            1u32..=3600,
            1u32..=100,
            1u32..=86400,
            prop::option::of("[a-z]{1,8}"),
            prop::collection::vec(("X-[A-Za-z-]{1,10}", any::<bool>()), 0..3),
        )
            .prop_map(
                |(
                    path,
                    port,
                    interval_seconds,
                    timeout_seconds,
                    failure_threshold,
                    startup_deadline_seconds,
                    user,
                    headers,
                )| Health {
                    path,
                    port,
                    interval_seconds,
                    timeout_seconds,
                    failure_threshold,
                    startup_deadline_seconds,
                    basic_auth: user.map(|username| BasicAuth {
                        username,
                        password_file: "/etc/dockop/secrets/pw".into(),
                    }),
                    http_headers: headers
                        .into_iter()
                        .map(|(name, from_file)| HttpHeader {
                            name,
                            value: (!from_file).then(|| "v".to_owned()),
                            value_from: from_file.then(|| ValueSource {
                                file: "/etc/dockop/secrets/h".into(),
                            }),
                        })
                        .collect(),
                },
            ),
    )
}

fn update() -> impl Strategy<Value = Update> {
    (
        0usize..3,
        10u32..=604_800,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(WINDOWS)),
    )
        .prop_map(
            |(p, check_interval_seconds, preflight, never, window)| Update {
                policy: [
                    UpdatePolicy::Auto,
                    UpdatePolicy::Monitor,
                    UpdatePolicy::Manual,
                ][p],
                check_interval_seconds,
                preflight,
                rollback: if never {
                    RollbackPolicy::Never
                } else {
                    RollbackPolicy::Auto
                },
                window: window.map(str::to_owned),
                // start-first needs health and ports: kept out of arbitrary specs.
                strategy: UpdateStrategy::StopFirst,
                drain_seconds: check_interval_seconds % 3601,
            },
        )
}

/// Networking, limits and hardening: valid values only (no `hostNetwork`, which excludes ports; no
/// `dependsOn`, which needs other objects).
#[allow(clippy::type_complexity)]
fn extra() -> impl Strategy<Value = ContainerSpec> {
    let networks = prop::collection::btree_map(
        "net-[a-z0-9]{1,6}",
        prop::collection::btree_set("[a-z][a-z0-9]{0,6}", 0..3),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(name, aliases)| NetworkAttachment {
                name,
                aliases: aliases.into_iter().collect(),
            })
            .collect::<Vec<_>>()
    });
    let resources = prop::option::of((
        prop::option::of(prop::sample::select(
            &["512Mi", "1Gi", "64M", "10000000"][..],
        )),
        prop::option::of(prop::sample::select(&[0.5, 1.5, 2.0][..])),
        prop::option::of(1i64..4096),
    ))
    .prop_map(|r| {
        r.map(|(memory, cpus, pids)| Resources {
            memory: memory.map(str::to_owned),
            cpus,
            pids,
        })
    });
    let logging = prop::option::of(prop::sample::select(
        &["json-file", "local", "journald"][..],
    ))
    .prop_map(|d| {
        d.map(|driver| Logging {
            driver: driver.to_owned(),
            options: if driver == "journald" {
                BTreeMap::new()
            } else {
                BTreeMap::from([
                    ("max-size".to_owned(), "20m".to_owned()),
                    ("max-file".to_owned(), "5".to_owned()),
                ])
            },
        })
    });
    let tmpfs = prop::collection::btree_map(
        "/tmpfs-[a-z]{1,5}",
        prop::option::of(prop::sample::select(&["64Mi", "1G"][..])),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(mount_path, size)| Tmpfs {
                mount_path,
                size: size.map(str::to_owned),
            })
            .collect::<Vec<_>>()
    });
    let capabilities = prop::option::of((
        prop::sample::subsequence(&["NET_BIND_SERVICE", "CHOWN"][..], 0..=2),
        prop::sample::subsequence(&["ALL", "NET_RAW", "SYS_ADMIN"][..], 0..=3),
    ))
    .prop_map(|c| {
        c.map(|(add, drop)| Capabilities {
            add: add.into_iter().map(str::to_owned).collect(),
            drop: drop.into_iter().map(str::to_owned).collect(),
        })
    });
    let hosts = prop::sample::subsequence(
        &["db.internal:10.0.0.5", "gw:host-gateway", "v6:::1"][..],
        0..=3,
    );
    (
        networks,
        resources,
        logging,
        any::<bool>(),
        tmpfs,
        capabilities,
        any::<bool>(),
        hosts,
        prop::option::of("[a-z][a-z0-9]{0,8}"),
    )
        .prop_map(
            |(networks, resources, logging, ro, tmpfs, capabilities, nnp, hosts, hostname)| {
                ContainerSpec {
                    networks,
                    resources,
                    logging,
                    read_only_root_filesystem: ro,
                    tmpfs,
                    capabilities,
                    no_new_privileges: nnp,
                    extra_hosts: hosts.into_iter().map(str::to_owned).collect(),
                    hostname,
                    ..serde_json::from_value(serde_json::json!({"image": "x"})).unwrap()
                }
            },
        )
}

fn container() -> impl Strategy<Value = Container> {
    let head = (
        metadata(),
        prop::sample::select(IMAGES),
        prop::option::of("sha256:[0-9a-f]{64}"),
        prop::option::of(prop::collection::vec(text(), 0..3)),
        prop::option::of(prop::collection::vec(text(), 0..3)),
        env(),
        ports(),
        volumes(),
    );
    let tail = (
        users(),
        any::<bool>(),
        health(),
        update(),
        any::<bool>(),
        0u32..=3600,
        0usize..4,
        prop::option::of("[a-z0-9]{1,6}(:[0-9]{1,4})?"),
        prop::option::of("/[a-z/]{0,10}"),
    );
    (head, tail, extra()).prop_map(
        |(
            (metadata, image, digest, command, entrypoint, env, ports, volumes),
            (
                users,
                prune_delete,
                mut health,
                update,
                init,
                stop_timeout_seconds,
                restart,
                user,
                working_dir,
            ),
            extra,
        )| {
            if let (Some(h), Some(p)) = (health.as_mut(), ports.first()) {
                h.port = p.container_port;
            }
            let digest = if image.contains('@') { None } else { digest };
            Container {
                api_version: ApiVersion::V1Alpha1,
                kind: Kind::Container,
                metadata,
                spec: ContainerSpec {
                    image: image.to_owned(),
                    digest,
                    command,
                    entrypoint,
                    env,
                    ports,
                    volumes,
                    users,
                    users_prune: if prune_delete {
                        UsersPrune::Delete
                    } else {
                        UsersPrune::Lock
                    },
                    health,
                    update,
                    init,
                    stop_timeout_seconds,
                    restart: [
                        RestartPolicy::No,
                        RestartPolicy::Always,
                        RestartPolicy::UnlessStopped,
                        RestartPolicy::OnFailure,
                    ][restart],
                    user,
                    working_dir,
                    ..extra
                },
                status: None,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_specs_survive_serialize_then_load(c in container()) {
        let text = serde_saphyr::to_string(&c).unwrap();
        let loaded = load_str(Path::new("roundtrip.yaml"), &text);
        let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
        prop_assert!(errors.is_empty(), "{}\n---\n{}", errors.join("\n"), text);
        prop_assert_eq!(loaded.objects.len(), 1);
        prop_assert_eq!(&loaded.objects[0].object, &c, "{}", text);
    }

    #[test]
    fn several_documents_round_trip(a in container(), b in container()) {
        prop_assume!(a.metadata.name != b.metadata.name);
        let b_ports: BTreeSet<u16> = b.spec.ports.iter().map(Port::effective_host_port).collect();
        prop_assume!(a.spec.ports.iter().all(|p| !b_ports.contains(&p.effective_host_port())));
        let text = format!("{}---\n{}", serde_saphyr::to_string(&a).unwrap(), serde_saphyr::to_string(&b).unwrap());
        let loaded = load_str(Path::new("two.yaml"), &text);
        prop_assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        prop_assert_eq!(&loaded.objects[0].object, &a);
        prop_assert_eq!(&loaded.objects[1].object, &b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = load_str(Path::new("junk.yaml"), &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(&[
        "apiVersion:", "kind:", "spec:", "metadata:", "name:", "image:", "ports:", "users:", "- ", "  ", "\n", "---\n",
        "[", "]", "{", "}", ",", ":", "&a ", "*a", "!!str ", "!!int ", "? ", "|\n", ">\n", "\"", "'", "#", "<<: ",
        "99999999999999999999999999", "-1", "1.5e308", ".nan", "null", "true", "containerPort: ", "password: x",
        "dockop.dev/v1alpha1", "Container", "x",
    ][..]), 0..80)) {
        let _ = load_str(Path::new("soup.yaml"), &tokens.concat());
    }

    #[test]
    fn wrong_types_anywhere_never_panic(c in container(), path_pick in any::<prop::sample::Index>(), junk in prop::sample::select(&[
        "null", "[]", "{}", "[1, [2, {a: b}]]", "-99999999999999999999", "1.0e400", "true", "\"str\"", "0x10",
    ][..])) {
        let mut value = serde_json::to_value(&c).unwrap();
        let mut paths = Vec::new();
        collect_paths(&value, String::new(), &mut paths);
        let pointer = path_pick.get(&paths).clone();
        let replacement: serde_json::Value = serde_saphyr::from_str(junk).unwrap_or(serde_json::Value::Null);
        if let Some(slot) = value.pointer_mut(&pointer) {
            *slot = replacement;
        }
        let text = serde_saphyr::to_string(&value).unwrap();
        let loaded = load_str(Path::new("typed.yaml"), &text);
        for d in &loaded.diagnostics {
            prop_assert!(d.line >= 1 && d.column >= 1);
        }
    }
}

fn collect_paths(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                collect_paths(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_paths(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn hostile_shapes_never_panic() {
    let deep_seq = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_map = (0..500)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect::<String>();
    let many_docs = "---\na: 1\n".repeat(20_000);
    let long_key = format!("{}: 1\n", "k".repeat(100_000));
    let huge = "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: h}\nspec:\n  image: web\n  stopTimeoutSeconds: 1e400\n  ports: [{containerPort: 18446744073709551616}]\n";
    for text in [
        deep_seq.as_str(),
        &deep_map,
        &many_docs,
        &long_key,
        huge,
        "\u{0}\u{1}\u{feff}",
        "%YAML 1.2\n---\n",
        "!<tag:x> {}",
    ] {
        let loaded = load_str(Path::new("hostile.yaml"), text);
        assert!(!loaded.is_valid() || loaded.objects.is_empty() || text == "%YAML 1.2\n---\n");
    }
    let _ = BTreeMap::<u8, u8>::new();
}
